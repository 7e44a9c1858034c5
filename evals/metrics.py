"""Statistics for cascade evaluation: bootstrap CIs, routing curves, confidence quality.

Pure numpy. Every function takes per-item arrays or curve points; nothing runs a model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _pgr(curve: Sequence[dict], acc_student: float, acc_teacher: float):
    """Curve as (share, performance-gap-recovered) arrays sorted by share, or None.

    PGR = (acc - acc_s) / (acc_t - acc_s). It is only meaningful when the teacher is
    strictly better than the student: with no gap (or a negative one) there is nothing
    to recover, so callers return nan.
    """
    gap = acc_teacher - acc_student
    if not gap > 1e-12:  # also catches nan
        return None
    pts = sorted((float(p["teacher_share"]), float(p["accuracy"])) for p in curve)
    if not pts:
        raise ValueError("empty curve")
    x = np.array([s for s, _ in pts])
    y = (np.array([a for _, a in pts]) - acc_student) / gap
    return x, y


def apgr(curve: Sequence[dict], acc_student: float, acc_teacher: float) -> float:
    """Average performance gap recovered: area under PGR vs teacher share on [0, 1].

    Linear interpolation between curve points is fair because mixing two adjacent
    thresholds at random achieves every point on the segment. Random routing gives
    exactly 0.5; a router that beats the teacher can exceed 1. Returns nan when
    ``acc_teacher <= acc_student`` (no gap to recover). The curve must contain both
    end points (share 0 and share 1), as ``cascade_curve`` does.
    """
    pgr = _pgr(curve, acc_student, acc_teacher)
    if pgr is None:
        return math.nan
    x, y = pgr
    if not (math.isclose(x[0], 0.0, abs_tol=1e-9) and math.isclose(x[-1], 1.0, abs_tol=1e-9)):
        raise ValueError("curve must include teacher_share 0 and 1 end points")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def cpt(
    curve: Sequence[dict], acc_student: float, acc_teacher: float, recovered: float = 0.5
) -> float:
    """Call-performance threshold: the smallest teacher share whose curve point
    recovers at least ``recovered`` of the student->teacher gap.

    Uses the curve points themselves (shares reachable with a single threshold), not
    interpolation. nan if never reached or if there is no gap (see ``apgr``).
    """
    pgr = _pgr(curve, acc_student, acc_teacher)
    if pgr is None:
        return math.nan
    x, y = pgr
    hit = np.flatnonzero(y >= recovered - 1e-12)
    return float(x[hit[0]]) if hit.size else math.nan


# --- confidence quality ------------------------------------------------------------


def check_probabilities(confidence: Any) -> np.ndarray:
    """Return confidence as a float array; raise ValueError unless all values are in [0, 1]."""
    conf = np.asarray(confidence, dtype=float)
    if conf.ndim != 1 or conf.size == 0:
        raise ValueError("confidence must be a non-empty 1-D array")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError(
            f"confidence must be probabilities in [0, 1]; got range "
            f"[{np.nanmin(conf):.4g}, {np.nanmax(conf):.4g}]"
        )
    return conf


def _pair(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = check_probabilities(confidence)
    ok = np.asarray(correct, dtype=float)
    if ok.shape != conf.shape:
        raise ValueError("confidence and correct must have the same shape")
    return conf, ok


def reliability_bins(confidence: Any, correct: Any, bins: int = 10) -> list[dict]:
    """Equal-mass bins (same number of items each, by sorted confidence).

    Equal-mass rather than equal-width because LLM confidences pile up near 1, which
    leaves equal-width bins mostly empty and the few full ones dominate.
    Each bin: mean confidence, accuracy, count, and its confidence range.
    """
    conf, ok = _pair(confidence, correct)
    order = np.argsort(conf, kind="stable")
    out = []
    for idx in np.array_split(order, min(bins, conf.size)):
        out.append(
            {
                "confidence": float(conf[idx].mean()),
                "accuracy": float(ok[idx].mean()),
                "count": int(idx.size),
                "low": float(conf[idx].min()),
                "high": float(conf[idx].max()),
            }
        )
    return out


def ece(confidence: Any, correct: Any, bins: int = 10) -> float:
    """Expected calibration error with equal-mass bins: sum_b (n_b/n) |acc_b - conf_b|."""
    table = reliability_bins(confidence, correct, bins)
    total = sum(b["count"] for b in table)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in table))


def brier(confidence: Any, correct: Any) -> float:
    """Mean squared error between confidence and the 0/1 outcome (lower is better)."""
    conf, ok = _pair(confidence, correct)
    return float(np.mean((conf - ok) ** 2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as in Mann-Whitney U)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def auroc(confidence: Any, correct: Any) -> float:
    """P(confidence of a correct item > that of a wrong item), ties counted 0.5.

    Measures error detection, which is what the cascade needs: any monotone scale
    works, so confidence need not be a probability. nan if only one class is present.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct).astype(bool)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same shape")
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(conf)
    return float((ranks[ok].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def curve_gain_over_random(student_correct: Any, teacher_correct: Any, confidence: Any) -> float:
    """Mean accuracy gain of the cascade over random routing across every teacher share.

    The cascade curve escalates the least confident items first (j = 0..n escalated); random
    routing is the straight line from student to teacher accuracy. Averaged over the n+1
    points, an item at 0-based rank r (ascending confidence, ties at their average rank, i.e.
    broken at random in expectation) is answered by the teacher in n-r of them, so the gain
    is a mean of per-item terms. It stays defined when the two models are equally accurate,
    where APGR is not: 0 = no better than random routing over the whole curve.
    """
    s = np.asarray(student_correct, dtype=float)
    t = np.asarray(teacher_correct, dtype=float)
    conf = np.asarray(confidence, dtype=float)
    if not s.shape == t.shape == conf.shape or s.ndim != 1 or s.size == 0:
        raise ValueError("student_correct, teacher_correct and confidence must be non-empty 1-D arrays of one shape")
    n, rank = s.size, _average_ranks(conf) - 1
    return float(np.mean(((n - rank) * t + (rank + 1) * s) / (n + 1) - (s + t) / 2))


def risk_coverage(confidence: Any, correct: Any) -> list[dict]:
    """Selective prediction: answer only the most confident share (coverage) of items.

    One point per distinct confidence, from the surest items outwards; risk is the error
    rate among the answered items.
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if conf.shape != ok.shape or conf.ndim != 1 or conf.size == 0:
        raise ValueError("confidence and correct must be non-empty 1-D arrays of the same shape")
    order = np.argsort(-conf, kind="stable")
    c, errors = conf[order], np.cumsum(1 - ok[order])
    cuts = np.r_[np.flatnonzero(c[1:] < c[:-1]), conf.size - 1]  # ties are answered together
    return [{"coverage": (j + 1) / conf.size, "risk": float(errors[j] / (j + 1)), "threshold": float(c[j])}
            for j in cuts]


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (step-wise; lower is better)."""
    points = risk_coverage(confidence, correct)
    area, prev = 0.0, 0.0
    for p in points:
        area += (p["coverage"] - prev) * p["risk"]
        prev = p["coverage"]
    return float(area)
