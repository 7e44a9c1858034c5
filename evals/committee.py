"""A committee of teachers as one more teacher: the mean of their option distributions.

Two small models rarely beat each other by much, but they err on different items; averaging
their option probabilities (an unweighted product-free ensemble, as in knowledge
purification across teachers) is usually better than either alone, and is the teacher worth
escalating to and distilling from. A committee call costs every member's call: its tokens
and latency are the sums.
"""
from __future__ import annotations

import math

import numpy as np

from prompts.rows import PromptRow


def _certainty(probs: np.ndarray) -> float:
    """1 - normalised entropy, as evals.signals.choice_features computes it (1 = certain)."""
    if probs.size < 2:
        return 1.0
    return float(1 + (probs * np.log(np.clip(probs, 1e-12, 1))).sum() / math.log(probs.size))


def committee_name(members: list[str]) -> str:
    return "committee(" + " + ".join(m.rsplit("/", 1)[-1] for m in members) + ")"


def can_form_committee(member_preds: list[list[dict]]) -> bool:
    """Only option-scoring members have distributions to average (API teachers generate)."""
    return len(member_preds) > 1 and all("probs" in p["features"] for ps in member_preds for p in ps)


def committee_predictions(member_preds: list[list[dict]], rows: list[PromptRow]) -> list[dict]:
    """Per row (same order as each member's list): the committee's answer, correctness and features."""
    by_id = {r.id: r for r in rows}
    out = []
    for answers in zip(*member_preds):
        row = by_id[answers[0]["prompt_id"]]
        probs = np.mean([np.asarray(a["features"]["probs"], dtype=float) for a in answers], axis=0)
        top = np.sort(probs)[::-1]
        best = int(np.argmax(probs))
        answer = row.choices[best]
        features = {"probs": probs.tolist(), "answer_index": best, "max_prob": float(top[0]),
                    "margin": float(top[0] - (top[1] if top.size > 1 else 0.0)), "entropy": _certainty(probs)}
        out.append(dict(prompt_id=row.id, split=row.split, request_key=answers[0]["request_key"], answer=answer,
                        correct=answer.strip().casefold() == row.gold.strip().casefold(), features=features,
                        tokens=int(sum(a["tokens"] for a in answers)),
                        latency_s=float(sum(a["latency_s"] for a in answers))))
    return out
