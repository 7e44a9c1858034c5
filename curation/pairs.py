"""Preference pairs from stored traces, exported in TRL's conversational prompt/chosen/rejected format.

Strategies (each pair records its strategy and margin):
- `verified`: a trace whose answer matches the human gold vs one that does not (or did not parse).
- `best_vs_worst`: highest vs lowest score per prompt (verifier or judge verdicts), kept when the
  score gap is at least `margin`.
- `teacher_vs_student`: PLaD-style pseudo-preference: the best teacher trace is preferred to the
  student's own trace for the same prompt, with no labels needed.
"""
from __future__ import annotations

from pathlib import Path

from store.records import TRACE_KINDS, make_pair
from store.store import Store
from curation.verify import VERIFIER
from core.errors import DistillError

STRATEGIES = ("verified", "best_vs_worst", "teacher_vs_student")


def _by_prompt(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        if r["split"] == "train":
            out.setdefault(r["prompt_id"], []).append(r)
    return out


def _score(s: dict) -> float:
    return float(s["score"]) if s["score"] is not None else float("-inf")


def build_pairs(store: Store, pool: str, run_id: str, strategy: str = "verified", margin: float = 0.0,
                student: str | None = None, score_prefix: str = VERIFIER) -> dict:
    """Build one strategy's pairs for a pool's train split (replacing that strategy's old pairs)."""
    if strategy not in STRATEGIES:
        raise DistillError(f"unknown pair strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    if strategy == "teacher_vs_student" and not student:
        raise DistillError("strategy teacher_vs_student needs the student's name (its traces must be in the store)")
    prefix = VERIFIER if strategy == "verified" else score_prefix
    groups = _by_prompt(store.scored_samples(pool, TRACE_KINDS, prefix))
    rows = []
    for prompt_id, cands in sorted(groups.items()):
        # Shorter first among equals: a concise chosen trace is the better teacher.
        cands.sort(key=lambda s: (-_score(s), len(s["reasoning"] or ""), s["id"]))
        if strategy == "verified":
            good = [s for s in cands if s["passed"]]
            bad = [s for s in cands if s["passed"] is False]  # unverified samples are not evidence
            if good and bad:
                rows.append(make_pair(prompt_id, good[0], bad[-1], strategy, 1.0, run_id))
        elif strategy == "best_vs_worst":
            scored = [s for s in cands if s["score"] is not None and s["answer"] is not None]
            if len(scored) >= 2 and _score(scored[0]) - _score(scored[-1]) >= max(margin, 1e-9):
                rows.append(make_pair(prompt_id, scored[0], scored[-1], strategy,
                                  _score(scored[0]) - _score(scored[-1]), run_id))
        else:
            teachers = [s for s in cands if s["teacher"] != student and s["answer"] is not None]
            students = [s for s in cands if s["teacher"] == student]
            if teachers and students:
                best = teachers[0]
                worst_student = students[-1]
                gap = _score(best) - _score(worst_student) if best["score"] is not None else 0.0
                if gap >= margin:
                    rows.append(make_pair(prompt_id, best, worst_student, strategy, gap, run_id))
    store.replace_pairs(strategy, pool, rows)
    return {"strategy": strategy, "prompts": len(groups), "pairs": len(rows)}


def export_pairs(store: Store, pool: str, path: str | Path, strategy: str = "verified") -> dict:
    """Write TRL's conversational preference format: prompt / chosen / rejected message lists."""
    from curation.export import export

    card = export(store, pool, "dpo", path, strategy=strategy)
    return {"rows": card["rows"], "path": card["path"]}
