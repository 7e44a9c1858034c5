"""`distill curate purify-bench champ`: purification methods vs single teachers on CHAMP.

CHAMP's recorded GPT-3.5, GPT-4, GPT-4 Turbo and PaLM 2 Medium solutions are four real API
teachers with human final answers. They are imported as samples (one per teacher and prompt
setting), final answers are checked against the human answers (curation/math_answers.py),
and every method picks one answer per held-out problem having learned only from the train
split. Printed per method: accuracy on the held-out split (bootstrap 95% CI), share of
problems kept, and its difference to the best single teacher (paired bootstrap CI); next to
each single teacher (one sample, and its own vote over its samples) and the oracle (any
teacher right). A 5-fold cross-validation over all problems gives every method more items.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from curation.purify import Candidates, choose, load_candidates, purify, teacher_agreement
from store.runs import recorded_run
from store.store import Store
from curation.verify import verify
from core.errors import DistillError
from core.stats import bootstrap_ci

BENCH_METHODS = ("majority", "plackett_luce", "classifier_router", "similarity_router", "bandit")


def _prepare(store: Store, settings: list[str]) -> Candidates:
    from prompts.champ import load_champ
    from synth.recorded import import_recorded

    with recorded_run(store, "purify-bench", {"settings": settings}) as run:
        store.add_prompts(load_champ(), "champ", run.run_id)
        imported = import_recorded(store, "champ", run.run_id, settings=settings)
        checked = verify(store, "champ", run.run_id)
    print(f"imported {imported['imported']} recorded solutions ({imported['already_there']} already there), "
          f"verified {checked['answer_match']['new_verdicts']} new", file=sys.stderr)
    return load_candidates(store, "champ")


Row = dict  # {"correct": (n,), "kept": (n,), "support": (n,)} over the target problems


def _method_row(cands: Candidates, rows: list[dict], target: list[str]) -> Row:
    by_id = {c["id"]: c for cs in cands.by_prompt.values() for c in cs}
    picked = {r["prompt_id"]: r for r in rows}
    correct, kept, support = [], [], []
    for p in target:
        r = picked.get(p)
        correct.append(bool(r and by_id[r["sample_id"]]["passed"]))
        kept.append(r is not None)
        given = [a for a in cands.teacher_answers(p) if a is not None]
        key = by_id[r["sample_id"]]["key"] if r else None
        support.append(sum(a == key for a in given) / len(given) if r and given else np.nan)
    return {"correct": np.array(correct, float), "kept": np.array(kept, float), "support": np.array(support)}


def teacher_rows(cands: Candidates, target: list[str], setting: str | None) -> dict[str, Row]:
    """Per teacher: correct on each target problem with one sample (`setting`) and with its own vote."""
    out = {}
    for j, t in enumerate(cands.teachers):
        vote, one, answered, support = [], [], [], []
        for p in target:
            answers = cands.teacher_answers(p)
            key = answers[j]
            vote.append(key is not None and any(c["passed"] for c in cands.by_prompt[p] if c["key"] == key))
            one.append(any(c["passed"] and c["setting"] == setting for c in cands.by_prompt[p] if c["teacher"] == t))
            answered.append(key is not None)
            given = [a for a in answers if a is not None]
            support.append(sum(a == key for a in given) / len(given) if key is not None else np.nan)
        base = {"kept": np.array(answered, float), "support": np.array(support)}
        out[f"{t} (vote of its samples)"] = dict(base, correct=np.array(vote, float))
        if setting:
            out[f"{t} ({setting})"] = dict(base, correct=np.array(one, float))
    return out


def evaluate_methods(cands: Candidates, fit: list[str], target: list[str], methods: tuple[str, ...],
             setting: str | None) -> dict[str, Row]:
    """Per row (method or teacher) over `target`, learning only from `fit`."""
    results = teacher_rows(cands, target, setting)
    for m in methods:
        results[m] = _method_row(cands, choose(cands, m, target, fit, gold_splits=()), target)
    oracle = np.array([any(c["passed"] for c in cands.by_prompt[p]) for p in target], dtype=float)
    results["oracle (any sample right)"] = {"correct": oracle, "kept": np.ones(len(target)),
                                            "support": np.full(len(target), np.nan)}
    return results


def _table(results: dict[str, Row], best_teacher: str, title: str) -> list[str]:
    lines = [f"### {title}", "", "| method | accuracy | 95% CI | minus best teacher | 95% CI | kept | teacher support |",
             "|---|---|---|---|---|---|---|"]
    base = results[best_teacher]["correct"]
    for name, row in results.items():
        v = row["correct"]
        acc, lo, hi = bootstrap_ci(lambda x: float(np.mean(x)), v)
        d, dlo, dhi = bootstrap_ci(lambda x, y: float(np.mean(x) - np.mean(y)), v, base)
        sup = np.nanmean(row["support"]) if not np.isnan(row["support"]).all() else float("nan")
        lines.append(f"| {name} | {acc:.3f} | [{lo:.3f}, {hi:.3f}] | {d:+.3f} | [{dlo:+.3f}, {dhi:+.3f}] | "
                     f"{row['kept'].mean():.0%} | {sup:.2f} |")
    return lines + [""]


def _best_teacher(results: dict[str, Row], teachers: list[str]) -> str:
    single = [k for k in results if any(k.startswith(t + " (") for t in teachers)]
    return max(single, key=lambda k: (results[k]["correct"].mean(), k))


def run_bench(target: str, bench_out: str | Path, store_path: str | Path | None = None,
              settings: list[str] | None = None) -> dict:
    """`champ` builds its own store under `bench_out` from the recorded `settings`; any other target is
    a pool of `store_path` with traces from several teachers and gold answers (its test split needs
    traces: import them)."""
    began = time.perf_counter()
    out = Path(bench_out)
    out.mkdir(parents=True, exist_ok=True)
    settings = list(settings or []) if target == "champ" else []
    if target != "champ" and store_path is None:
        raise DistillError(f"purify-bench on pool '{target}' needs --store")
    with Store(out / "champ.duckdb" if target == "champ" else store_path) as store:
        if target == "champ":
            cands = _prepare(store, settings)
        else:
            if not store.count("prompts", "pool = ?", [target]):
                raise DistillError(f"purify-bench: pool '{target}' is empty in {store.path}: "
                                   "use `champ`, or a pool with traces from several teachers")
            verify(store, target, "purify-bench")
            cands = load_candidates(store, target)
        for cs in cands.by_prompt.values():  # which recorded prompt setting each sample came from
            for c in cs:
                c["setting"] = json.loads(c["request_params"] or "{}").get("setting")
        fit = sorted(p for p, s in cands.split.items() if s == "train")
        test = sorted(p for p, s in cands.split.items() if s == "test")
        if not fit or not test:
            raise DistillError(f"purify-bench needs traces on both the train and the test split of '{target}' "
                               f"(found {len(fit)} train, {len(test)} test prompts with traces)")
        with recorded_run(store, "purify-bench", {"target": target, "settings": settings,
                                                  "methods": BENCH_METHODS}) as run:
            for m in BENCH_METHODS:  # the held-out split's picks, with provenance, stay in the store
                purify(store, target, run.run_id, m, splits=("test",), require_verified=False, gold_splits=(),
                       candidates=cands)
    setting = settings[0] if settings else None
    held = evaluate_methods(cands, fit, test, BENCH_METHODS, setting)
    best = _best_teacher(held, cands.teachers)
    mean_agreement = np.nanmean([teacher_agreement(cands.teacher_answers(p)) or np.nan for p in test])
    title = f"CHAMP ({len(cands.teachers)} recorded teachers, settings {settings})" if target == "champ" \
        else f"pool '{target}' ({len(cands.teachers)} teachers)"
    lines = [f"# Purification on {title}", "",
             f"Held-out split: {len(test)} problems (fit on {len(fit)} train problems); "
             f"mean pairwise teacher agreement {mean_agreement:.2f}; best single teacher: {best}.", ""]
    lines += _table(held, best, f"Held-out test split (n={len(test)})")
    folds = _cross_validate(cands, setting, k=5)
    lines += _table(folds, _best_teacher(folds, cands.teachers), f"5-fold cross-validation (n={len(cands.split)})")
    lines.append(f"Wall time {time.perf_counter() - began:.1f} s.")
    report = "\n".join(lines) + "\n"
    print(report)
    (out / "report.md").write_text(report)
    summary = {k: float(v["correct"].mean()) for k, v in held.items()}
    cv = {k: float(v["correct"].mean()) for k, v in folds.items()}
    (out / "results.json").write_text(json.dumps({"held_out": summary, "cv": cv,
                                                  "best_teacher": best, "settings": settings}, indent=1))
    return summary


def _cross_validate(cands: Candidates, setting: str | None, k: int) -> dict[str, Row]:
    ids = sorted(cands.split)
    fold = {p: int(p[-6:], 16) % k for p in ids}  # ids are hashes: a fixed, unbiased assignment
    parts: dict[str, list[Row]] = {}
    for f in range(k):
        fit = [p for p in ids if fold[p] != f]
        target = [p for p in ids if fold[p] == f]
        for name, row in evaluate_methods(cands, fit, target, BENCH_METHODS, setting).items():
            parts.setdefault(name, []).append(row)
    return {name: {col: np.concatenate([r[col] for r in rows]) for col in ("correct", "kept", "support")}
            for name, rows in parts.items()}
