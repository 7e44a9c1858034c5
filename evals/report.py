"""Human-readable report for a cascade evaluation: report.md, two PNGs, results.json.

Takes the dict returned by ``evals.cascade.evaluate`` (already JSON-clean: infinities
and undefined metrics are None) and renders it; no statistics are computed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from evals.cascade import jsonable  # noqa: E402


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pct(x: Any, digits: int = 1) -> str:
    return "n/a" if _missing(x) else f"{100 * x:.{digits}f}%"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "n/a" if _missing(x) else format(x, fmt)


def _cell(text: str) -> str:
    """Model names go into a markdown table: a literal '|' would split the cell."""
    return str(text).replace("|", "\\|")


def _acc_ci(row: dict) -> str:
    if _missing(row.get("ci_low")):
        return _pct(row["accuracy"])
    return f"{_pct(row['accuracy'])} [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"


def _signed_points(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _rows_by_role(result: dict, role: str) -> list[dict]:
    return [r for r in result["rows"] if r["role"] == role]


def _threshold_sentence(result: dict) -> str:
    text = result.get("threshold_text", "")
    if text == "-inf":
        return "the fitted threshold is -inf: every query stays with the student"
    if text == "inf":
        return "the fitted threshold is +inf: every query goes to the teacher"
    return f"queries escalate when the student's confidence is below {float(text):.4g}"


def _markdown(result: dict, title: str, extra_sections: dict[str, str] | None) -> str:
    fit, cvr, cal = result["fit"], result["cascade_vs_random"], result["calibration"]
    goal = []
    if fit.get("target_accuracy") is not None:
        goal.append(f"target accuracy {_pct(fit['target_accuracy'])}")
    if fit.get("max_teacher_share") is not None:
        goal.append(f"at most {_pct(fit['max_teacher_share'])} teacher calls")
    goal_text = ", ".join(goal) if goal else "maximise accuracy"
    lines = [
        f"# {title}",
        "",
        f"Student `{result['student']}` answers first; {_threshold_sentence(result)}, "
        f"and escalated queries go to `{result['cascade_teacher']}` "
        "(the most accurate teacher on the calibration split).",
        f"The threshold was fitted on the calibration split only (n={fit['n_calib']}, goal: "
        f"{goal_text}); there the cascade reached {_pct(fit['calib_accuracy'])} accuracy with "
        f"{_pct(fit['calib_teacher_share'])} of queries sent to the teacher.",
        f"All numbers below are on the held-out test split (n={result['n_test']}); "
        "accuracy is against human labels, with 95% bootstrap intervals over items.",
        "",
        "## Results on the test split",
        "",
        "| model | accuracy [95% CI] | share of teacher calls | teacher tokens / 1k queries "
        "| total tokens / 1k queries |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {_cell(r['model'])} | {_acc_ci(r)} | {_pct(r['teacher_share'])} "
            f"| {r['teacher_tokens_per_1k']:,.0f} | {r['tokens_per_1k']:,.0f} |"
        )
    lines += [
        "",
        f"**Cascade vs random routing at the same share ({_pct(cvr['teacher_share'])} teacher "
        f"calls):** {_signed_points(cvr['difference'])} accuracy points "
        f"[95% CI {_signed_points(cvr['ci_low'])}, {_signed_points(cvr['ci_high'])}] "
        f"(random routing: {_pct(cvr['random_accuracy'])}; paired bootstrap over test items).",
        "",
        "## Routing quality",
        "",
        f"- APGR (average performance gap recovered, 0.5 = random routing, higher is better): "
        f"{_num(result['apgr'])}",
        f"- CPT(50%) (teacher share needed to recover half of the student-to-teacher gap): "
        f"{_pct(result['cpt_50'])}",
        f"- CPT(80%): {_pct(result['cpt_80'])}",
        "",
        "n/a means there is no gap to recover (the teacher is not more accurate than the "
        "student on test) or the cascade never reaches that fraction.",
        "",
        "![Accuracy vs share of teacher calls](cascade.png)",
        "",
        "## Student confidence",
        "",
        f"- ECE (10 equal-mass bins, lower is better): {_num(cal['ece'])}",
        f"- Brier score (lower is better): {_num(cal['brier'])}",
        f"- AUROC for telling right from wrong answers (0.5 = chance, 1 = perfect): "
        f"{_num(cal['auroc'])}",
        "",
        "![Reliability diagram](reliability.png)",
        "",
    ]
    for heading, body in (extra_sections or {}).items():
        lines += [f"## {heading}", "", body.rstrip(), ""]
    return "\n".join(lines)


def _plot_cascade(result: dict, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 5))
    curve = result["curve"]
    ax.plot([p["teacher_share"] for p in curve], [p["accuracy"] for p in curve],
            color="tab:blue", lw=1.8, label="cascade, all thresholds (test)")
    student = _rows_by_role(result, "student")[0]
    teachers = _rows_by_role(result, "teacher")
    chosen = next(r for r in teachers if r["model"] == result["cascade_teacher"])
    ax.plot([0, 1], [student["accuracy"], chosen["accuracy"]], ls="--", color="gray",
            label="random routing")
    ax.plot(0, student["accuracy"], "o", ms=9, color="black", label=f"student: {student['model']}")
    markers = "s^vP<>X"
    # Colours not used by the curve (blue), cascade (red) or oracle (green).
    colours = ["tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    for i, r in enumerate(teachers):
        ax.plot(1, r["accuracy"], markers[i % len(markers)], ms=9, color=colours[i % len(colours)],
                label=f"teacher: {r['model']}")
    casc = _rows_by_role(result, "cascade")[0]
    yerr = [[casc["accuracy"] - casc["ci_low"]], [casc["ci_high"] - casc["accuracy"]]]
    ax.errorbar(casc["teacher_share"], casc["accuracy"], yerr=yerr, fmt="*", ms=16,
                color="tab:red", capsize=4, zorder=5, label="cascade at fitted threshold (95% CI)")
    orc = _rows_by_role(result, "oracle")[0]
    ax.plot(orc["teacher_share"], orc["accuracy"], "D", ms=8, color="tab:green",
            label="oracle routing")
    ax.set_xlim(-0.03, 1.03)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of queries sent to the teacher")
    ax.set_ylabel("accuracy vs human labels (test split)")
    ax.set_title(f"{title}\naccuracy vs teacher calls")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _plot_reliability(result: dict, title: str, path: Path) -> None:
    cal = result["calibration"]
    bins = cal["bins"]
    conf = [b["confidence"] for b in bins]
    acc = [b["accuracy"] for b in bins]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
    # Vertical gap from the diagonal shows each bin's miscalibration.
    ax.vlines(conf, conf, acc, color="tab:red", alpha=0.5, lw=2, label="gap")
    ax.plot(conf, acc, "o-", color="tab:blue", ms=7,
            label=f"student, {len(bins)} equal-mass bins (~{bins[0]['count']} items each)")
    ax.set_xlim(-0.01, 1.02)  # margin so bins at confidence 0 or 1 are not clipped
    ax.set_ylim(-0.01, 1.02)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{title}\nstudent reliability (ECE {_num(cal['ece'])})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_report(
    result: dict, out_dir: Path, title: str, extra_sections: dict[str, str] | None = None
) -> Path:
    """Write report.md, cascade.png, reliability.png and results.json; return report.md."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = jsonable(result)  # tolerate a raw dict with numpy types / infinities
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    _plot_cascade(result, title, out_dir / "cascade.png")
    _plot_reliability(result, title, out_dir / "reliability.png")
    path = out_dir / "report.md"
    path.write_text(_markdown(result, title, extra_sections))
    return path
