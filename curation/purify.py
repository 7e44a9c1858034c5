"""Per-prompt selection across teachers: verified first, then consensus, then shortest.

This is the simplest knowledge-purification rule (verifier-first selection). Prompts with
no verified trace get no training example: a wrong rationale teaches the student wrong.
"""
from __future__ import annotations

from collections import Counter

from curation.store import Store
from curation.verify import VERIFIER

METHOD = "verified_first"


def select_traces(store: Store, pool: str, run_id: str, require_verified: bool = True) -> dict:
    by_prompt: dict[str, list[dict]] = {}
    for s in store.curated_samples(pool, VERIFIER):
        if s["split"] == "train" and s["kept"] and s["answer"] is not None:
            by_prompt.setdefault(s["prompt_id"], []).append(s)
    rows, teachers = [], Counter()
    for prompt_id, cands in by_prompt.items():
        votes = Counter(c["answer"] for c in cands)
        cands.sort(key=lambda c: (not c["passed"], -votes[c["answer"]], c["completion_tokens"] or 0, c["id"]))
        best = cands[0]
        if require_verified and not best["passed"]:
            continue
        teachers[best["teacher"]] += 1
        rows.append(dict(prompt_id=prompt_id, method=METHOD, sample_id=best["id"], run_id=run_id,
                         detail={"candidates": len(cands), "teachers": sorted({c["teacher"] for c in cands}),
                                 "agreeing": votes[best["answer"]], "verified": bool(best["passed"])}))
    store.replace_purified(METHOD, rows)
    return {"prompts_with_traces": len(by_prompt), "selected": len(rows), "by_teacher": dict(teachers)}
