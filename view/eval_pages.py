"""Evaluations: the list, one eval (its report's plots and its per-query rows), and the plot files.

What is stored per query (`eval_predictions`): each model's answer, whether it matched the human
label, the raw confidence signal and tokens. Whether the cascade escalated a query is not stored:
it is recomputed here as evals.cascade does it, calibrated(raw confidence) < threshold, with the
calibrator and threshold the eval stored in `evals.metrics` (the same dict as results.json). With
the `learned` signal the per-query raw confidence is not stored, so escalation shows as unknown.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from evals.calibrate import Calibrator
from store.store import Store
from view.pages import PageError, choice, loads, paging, path_part

# The only files an eval page serves: the PNGs evals.report.write_cascade_report writes beside report.md.
PLOTS = {"cascade.png": "accuracy vs teacher calls and cost", "reliability.png": "reliability, before and after "
         "calibration", "risk_coverage.png": "risk vs coverage", "slices.png": "accuracy per slice"}
RIGHT_WRONG = ("right", "wrong")


def report_dir(store_path: Path, report_path: str | None) -> Path | None:
    """The folder of an eval's report.md: a relative path is read from the current folder, else beside
    the store (where `distill eval` was run is not recorded)."""
    if not report_path:
        return None
    path = Path(report_path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, store_path.parent / path]
    return next((p.parent for p in candidates if p.parent.is_dir()), None)


def eval_plot_file(store: Store, store_path: Path, eval_id: str, name: str) -> Path:
    """One of PLOTS from one eval's report folder; any other name, or a file that resolves outside
    that folder (a symlink), is a 404."""
    ev = store.view_eval(eval_id)
    if name not in PLOTS or ev is None:
        raise PageError(404, "no such plot")
    folder = report_dir(store_path, ev["report_path"])
    path = _plot_path(folder, name) if folder is not None else None
    if path is None:
        raise PageError(404, "no such plot")
    return path


def _plot_path(folder: Path, name: str) -> Path | None:
    """The plot file when it is a file of `folder` itself, after following links; else None."""
    path = (folder / name).resolve()
    return path if path.parent == folder.resolve() and path.is_file() else None


def evals_page(store: Store) -> dict:
    return {"evals": [dict(e, config=loads(e["config"])) for e in store.view_evals()]}


def _threshold(metrics: dict) -> float | None:
    """The fitted threshold; results.json stores +/-inf as null with the sign in threshold_text."""
    text = metrics.get("threshold_text")
    try:
        return float(text) if text is not None else metrics.get("threshold")
    except (TypeError, ValueError):
        return metrics.get("threshold")


def _queries(store: Store, eval_id: str, student: str, teacher: str, metrics: dict) -> list[dict]:
    calibrator = Calibrator.from_dict(metrics["calibrator"]) if metrics.get("calibrator") else Calibrator()
    threshold = _threshold(metrics)
    rows: dict[str, dict] = {}
    for p in store.view_eval_predictions(eval_id, [student, teacher]):
        row = rows.setdefault(p["prompt_id"], {"prompt_id": p["prompt_id"], "split": p["split"], "gold": p["gold"],
                                               "input": p["input"], "student": None, "teacher": None})
        row["student" if p["model"] == student else "teacher"] = p
    for row in rows.values():
        s = row["student"]
        raw = s["confidence"] if s else None
        if raw is None or threshold is None or (isinstance(raw, float) and math.isnan(raw)):
            row["calibrated"], row["escalated"] = None, None
        else:
            row["calibrated"] = float(calibrator.apply([raw])[0])
            row["escalated"] = row["calibrated"] < threshold
        t = row["teacher"]
        answered = t if row["escalated"] else s
        row["cascade_right"] = None if row["escalated"] is None or answered is None else answered["correct"]
    return list(rows.values())


def _keep(row: dict, split: str | None, escalated: str | None, student: str | None, teacher: str | None) -> bool:
    def right(p: dict | None) -> str | None:
        return None if p is None or p["correct"] is None else ("right" if p["correct"] else "wrong")
    return ((split is None or row["split"] == split)
            and (escalated is None or row["escalated"] is (escalated == "yes"))
            and (student is None or right(row["student"]) == student)
            and (teacher is None or right(row["teacher"]) == teacher))


def eval_page(store: Store, store_path: Path, eval_id: str, query: Mapping[str, str]) -> dict:
    ev = store.view_eval(eval_id)
    if ev is None:
        raise PageError(404, f"no eval {eval_id!r} in this store")
    config, metrics = loads(ev["config"]) or {}, loads(ev["metrics"]) or {}
    student, teacher = config.get("student"), metrics.get("cascade_teacher")
    queries = _queries(store, eval_id, student, teacher, metrics) if student and teacher else []
    # Test by default (what the report scores); split=all shows the calibration rows too.
    default = "test" if any(q["split"] == "test" for q in queries) else "all"
    split_param = choice(query, "split", [*sorted({q["split"] for q in queries}), "all"]) or default
    split = None if split_param == "all" else split_param
    escalated = choice(query, "escalated", ("yes", "no"))
    student_f, teacher_f = choice(query, "student", RIGHT_WRONG), choice(query, "teacher", RIGHT_WRONG)
    shown = [q for q in queries if _keep(q, split, escalated, student_f, teacher_f)]
    page = paging(query)
    folder = report_dir(store_path, ev["report_path"])
    plots = [(name, words) for name, words in PLOTS.items() if folder is not None and _plot_path(folder, name)]
    params = {"split": split_param, "escalated": escalated, "student": student_f, "teacher": teacher_f}
    return {"eval": dict(ev, config=config), "metrics": metrics, "student": student, "teacher": teacher,
            "threshold": _threshold(metrics), "rows": metrics.get("rows") or [], "plots": plots,
            "report_folder": folder, "queries": shown[page.offset:page.offset + page.size],
            "n_queries": len(queries), "filters": params,
            "splits": sorted({q["split"] for q in queries}),
            "unknown_escalation": any(q["escalated"] is None for q in queries),
            "pager": page.info(len(shown), f"/evals/{path_part(eval_id)}", params)}
