"""Cascades of more than two models: each model answers when its calibrated confidence
clears its own threshold, otherwise the query moves on; the last model always answers.

Every model consulted is paid for (a query that reaches model 3 cost models 1, 2 and 3).
Thresholds are fitted on the calibration split by coordinate search over each stage's
confidence quantiles: a few passes, each stage's threshold chosen with the others fixed.
"""
from __future__ import annotations

import math

import numpy as np


def chain_outcome(correct: list[np.ndarray], conf: list[np.ndarray], tokens: list[np.ndarray],
                  thresholds: list[float]) -> dict:
    """Route every item through the chain; returns accuracy, tokens, who answered."""
    n = correct[0].size
    answered_by = np.full(n, len(correct) - 1)
    open_ = np.ones(n, dtype=bool)
    for i, t in enumerate(thresholds):
        take = open_ & (conf[i] >= t)
        answered_by[take] = i
        open_ &= ~take
    ok = np.choose(answered_by, correct)
    paid = sum(np.where(answered_by >= i, tokens[i], 0) for i in range(len(correct)))
    return {"correct": ok, "accuracy": float(ok.mean()), "tokens": int(paid.sum()), "answered_by": answered_by,
            "beyond_first": float((answered_by > 0).mean())}


def _candidates(c: np.ndarray, grid: int) -> list[float]:
    qs = np.unique(np.quantile(c, np.linspace(0, 1, grid)))
    return [-math.inf, *qs.tolist(), math.inf]


def fit_chain(correct: list[np.ndarray], conf: list[np.ndarray], tokens: list[np.ndarray],
              target_accuracy: float | None = None, grid: int = 21, passes: int = 3) -> list[float]:
    """Thresholds for every model but the last: the cheapest chain reaching the target on
    calibration, or the most accurate (ties: cheapest) when there is no target or it is out of reach."""
    if not len(correct) == len(conf) + 1 == len(tokens) or len(correct) < 2:
        raise ValueError("a chain needs n models, n-1 confidences and n token arrays (n >= 2)")

    def score(th: list[float]) -> tuple:
        out = chain_outcome(correct, conf, tokens, th)
        reached = target_accuracy is not None and out["accuracy"] >= target_accuracy - 1e-12
        # Reaching the target first, then cheaper; otherwise more accurate, then cheaper.
        return (1, -out["tokens"], out["accuracy"]) if reached else (0, out["accuracy"], -out["tokens"])

    thresholds = [math.inf] * len(conf)  # start from "always pass on": the last model answers all
    for _ in range(passes):
        changed = False
        for i in range(len(conf)):
            best = max(_candidates(conf[i], grid), key=lambda t: score(thresholds[:i] + [t] + thresholds[i + 1:]))
            if best != thresholds[i]:
                thresholds[i], changed = best, True
        if not changed:
            break
    return thresholds
