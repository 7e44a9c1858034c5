"""Answer verification against the human gold answer, cached per (sample, verifier version)."""
from __future__ import annotations

import json
from fractions import Fraction

from curation.store import Store

VERIFIER = "answer_match"
VERSION = "1"


def _as_number(text: str) -> Fraction | None:
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(answer: str | None, gold: str, choices: list[str] | None = None) -> bool:
    """Equal after normalisation: case and punctuation for text, exact value for numbers."""
    if answer is None:
        return False
    a, g = answer.strip().rstrip(".").lower(), gold.strip().rstrip(".").lower()
    if a == g:
        return True
    na, ng = _as_number(a), _as_number(g)
    return na is not None and na == ng


def verify_samples(store: Store, pool: str, run_id: str) -> dict:
    """Write a verdict for every trace of the pool that has none for this verifier version."""
    done = store.verified_keys(VERIFIER, VERSION)
    rows = []
    for s in store.samples(kind="cot", pool=pool):
        if s["id"] in done:
            continue
        choices = json.loads(s["choices"]) if s["choices"] else None
        passed = answers_match(s["answer"], s["gold"], choices)
        detail = s["parse_error"] or f"answer {s['answer']!r} vs gold {s['gold']!r}"
        rows.append(dict(sample_id=s["id"], verifier=VERIFIER, verifier_version=VERSION, passed=passed,
                         score=1.0 if passed else 0.0, detail=detail, run_id=run_id))
    store.add_verdicts(rows)
    total = store.count("verdicts", "verifier = ? AND verifier_version = ? AND passed", [VERIFIER, VERSION])
    return {"new_verdicts": len(rows), "passed_total": total}


TOOL_VERIFIER = "tool_match"


def verify_tool_samples(store: Store, pool: str, run_id: str) -> dict:
    """Final answers of tool trajectories vs gold; BFCL calls vs ground truth (AST match)."""
    from synth.tools import bfcl_match

    done = store.verified_keys(TOOL_VERIFIER, VERSION)
    rows = []
    for kind in ("tool_trajectory", "tool_call"):
        for s in store.train_samples_of_kind(pool, kind):
            if s["id"] in done:
                continue
            if kind == "tool_call":
                passed = s["answer"] is not None and bfcl_match(json.loads(s["answer"]), s["gold"])
            else:
                passed = answers_match(s["answer"], s["gold"])
            rows.append(dict(sample_id=s["id"], verifier=TOOL_VERIFIER, verifier_version=VERSION, passed=passed,
                             score=1.0 if passed else 0.0, detail=s["parse_error"] or f"answer {s['answer']!r}",
                             run_id=run_id))
    store.add_verdicts(rows)
    return {"new_verdicts": len(rows), "passed": sum(r["passed"] for r in rows)}
