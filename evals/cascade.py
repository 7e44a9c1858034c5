"""Confidence cascade: the student answers first; if its confidence is below a
threshold the query escalates to a teacher.

Rule used everywhere: an item is answered by the student when
``confidence >= threshold``, otherwise by the teacher. Thresholds are fitted on a
calibration split and scored on a separate test split. Nothing here runs a model:
the pipeline passes per-item correctness, token counts and confidences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from core.stats import bootstrap_ci
from evals import metrics
from evals.results import CascadeResult, Fit, Row, VersusRandom


@dataclass
class ModelAnswers:
    """Per-item results of one model on one split (all arrays aligned by item)."""

    name: str
    correct: np.ndarray  # bool: answer matched the held-out human label
    tokens: np.ndarray  # int: prompt + completion tokens, the cost proxy
    confidence: np.ndarray | None = None  # float, higher = surer; student only

    def __post_init__(self) -> None:
        correct = np.asarray(self.correct)
        if correct.ndim != 1 or correct.size == 0:
            raise ValueError(f"{self.name}: correct must be a non-empty 1-D array")
        if correct.dtype != bool and not np.isin(correct, (0, 1)).all():
            raise ValueError(f"{self.name}: correct must be boolean (or 0/1)")
        self.correct = correct.astype(bool)
        tokens = np.asarray(self.tokens)
        if tokens.shape != correct.shape:
            raise ValueError(f"{self.name}: tokens and correct differ in length")
        if np.any(tokens < 0) or np.any(tokens != np.round(tokens)):
            raise ValueError(f"{self.name}: tokens must be non-negative integers")
        self.tokens = tokens.astype(np.int64)
        if self.confidence is not None:
            conf = np.asarray(self.confidence, dtype=float)
            if conf.shape != correct.shape or not np.all(np.isfinite(conf)):
                raise ValueError(f"{self.name}: confidence must be finite, one per item")
            self.confidence = conf

    @property
    def n(self) -> int:
        return int(self.correct.size)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def _check_pair(student: ModelAnswers, teacher: ModelAnswers) -> np.ndarray:
    """Validate a student/teacher pair and return the student's confidence."""
    if student.confidence is None:
        raise ValueError(f"student {student.name!r} has no confidence")
    if teacher.n != student.n:
        raise ValueError(f"{student.name} and {teacher.name} cover different item counts")
    return student.confidence


def cascade_outcome(student: ModelAnswers, teacher: ModelAnswers, threshold: float) -> dict:
    """Score the cascade at one threshold. Also returns the per-item ``correct`` array."""
    conf = _check_pair(student, teacher)
    escalated = conf < threshold
    correct = np.where(escalated, teacher.correct, student.correct)
    teacher_tokens = int(teacher.tokens[escalated].sum())
    return {
        "accuracy": float(correct.mean()),
        "teacher_share": float(escalated.mean()),
        "teacher_tokens": teacher_tokens,
        # The student always runs (its confidence decides the routing).
        "tokens": int(student.tokens.sum()) + teacher_tokens,
        "escalated": escalated,
        "correct": correct,
    }


def _threshold_between(sorted_conf: np.ndarray, j: int) -> float:
    """A threshold that escalates exactly the j least-confident items.

    Midpoint between neighbours so it generalises to unseen confidences; if the two
    values are adjacent floats the midpoint can round onto the lower one, in which
    case the upper value itself still separates them under ``>=``.
    """
    if j == 0:
        return -math.inf
    if j == sorted_conf.size:
        return math.inf
    lo, hi = float(sorted_conf[j - 1]), float(sorted_conf[j])
    mid = lo / 2 + hi / 2  # halves first: no overflow for huge values
    return mid if lo < mid <= hi else hi


def cascade_curve(student: ModelAnswers, teacher: ModelAnswers) -> list[dict]:
    """Cascade at every distinct threshold, from all-student to all-teacher.

    Points are sorted by teacher_share (strictly increasing). Each has threshold,
    teacher_share, accuracy, teacher_tokens and tokens (totals over the split).
    """
    conf = _check_pair(student, teacher)
    order = np.argsort(conf, kind="stable")
    c, n = conf[order], student.n
    # cum_x[j] = total over the j least-confident items (those escalated at cut j).
    cum_s = np.r_[0, np.cumsum(student.correct[order])]
    cum_t = np.r_[0, np.cumsum(teacher.correct[order])]
    cum_tok = np.r_[0, np.cumsum(teacher.tokens[order])]
    student_tokens = int(student.tokens.sum())
    # Cut only between distinct confidences: tied items must escalate together.
    cuts = np.r_[0, np.flatnonzero(c[1:] > c[:-1]) + 1, n]
    return [
        {
            "threshold": _threshold_between(c, int(j)),
            "teacher_share": j / n,
            "accuracy": float((cum_t[j] + cum_s[n] - cum_s[j]) / n),
            "teacher_tokens": int(cum_tok[j]),
            "tokens": student_tokens + int(cum_tok[j]),
        }
        for j in cuts
    ]


def fit_threshold(
    student_calib: ModelAnswers,
    teacher_calib: ModelAnswers,
    target_accuracy: float | None = None,
    max_teacher_share: float | None = None,
) -> float:
    """Choose a threshold from calibration data only.

    - target_accuracy: the lowest teacher share whose calibration accuracy >= target;
      if unreachable, fall back to the accuracy-maximising threshold.
    - max_teacher_share: maximise calibration accuracy subject to share <= max.
    - both: the lowest share reaching the target within the budget, else the best
      accuracy within the budget. - neither: maximise accuracy.
    Accuracy ties go to fewer teacher calls. May return +/-inf (all teacher / all student).
    """
    for name, v in (("target_accuracy", target_accuracy), ("max_teacher_share", max_teacher_share)):
        if v is not None and not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    curve = cascade_curve(student_calib, teacher_calib)
    eps = 1e-12  # shares/accuracies are k/n floats; don't lose exact hits to rounding
    budget = math.inf if max_teacher_share is None else max_teacher_share + eps
    feasible = [p for p in curve if p["teacher_share"] <= budget]  # share 0 always fits
    if target_accuracy is not None:
        hits = [p for p in feasible if p["accuracy"] >= target_accuracy - eps]
        if hits:
            return min(hits, key=lambda p: p["teacher_share"])["threshold"]
    return max(feasible, key=lambda p: (p["accuracy"], -p["teacher_share"]))["threshold"]


def random_routing(
    student: ModelAnswers,
    teacher: ModelAnswers,
    teacher_share: float,
    n_draws: int = 200,
    seed: int = 0,
) -> float:
    """Expected accuracy when a random ``teacher_share`` of queries escalates.

    Computed analytically, (1-s)*acc_s + s*acc_t, which is the exact expectation of
    random draws; ``n_draws``/``seed`` are accepted for API compatibility and unused.
    """
    if teacher.n != student.n:
        raise ValueError("student and teacher cover different item counts")
    return (1 - teacher_share) * student.accuracy + teacher_share * teacher.accuracy


def oracle_routing(student: ModelAnswers, teacher: ModelAnswers) -> dict:
    """Escalate exactly the items the student gets wrong and the teacher gets right."""
    if teacher.n != student.n:
        raise ValueError("student and teacher cover different item counts")
    escalated = ~student.correct & teacher.correct
    teacher_tokens = int(teacher.tokens[escalated].sum())
    return {
        "accuracy": float((student.correct | teacher.correct).mean()),
        "teacher_share": float(escalated.mean()),
        "teacher_tokens": teacher_tokens,
        "tokens": int(student.tokens.sum()) + teacher_tokens,
        "escalated": escalated,
    }


def _row(model: str, role: str, per_item: np.ndarray, share: float, teacher_tokens: float,
         tokens: float, seed: int) -> Row:
    """One table row; accuracy CI by bootstrap over test items."""
    n = per_item.size
    acc, low, high = bootstrap_ci(np.mean, per_item.astype(float), seed=seed)
    return Row(model=model, role=role, accuracy=acc, ci_low=low, ci_high=high, teacher_share=float(share),
               teacher_tokens_per_1k=1000 * float(teacher_tokens) / n, tokens_per_1k=1000 * float(tokens) / n, n=n)


def evaluate(
    student_calib: ModelAnswers,
    teachers_calib: list[ModelAnswers],
    student_test: ModelAnswers,
    teachers_test: list[ModelAnswers],
    target_accuracy: float | None = None,
    max_teacher_share: float | None = None,
    seed: int = 0,
    threshold: float | None = None,
) -> CascadeResult:
    """Fit on calibration, score on test; the core of the result (evals.analysis adds the rest).

    The cascade teacher is the most accurate teacher on calibration (ties: first
    listed), so no choice looks at the test split. `threshold`, when given, was chosen
    on calibration by the caller and replaces the fit. Teachers are matched by position
    and must have the same names in both lists.
    """
    if not teachers_calib or len(teachers_calib) != len(teachers_test):
        raise ValueError("need the same non-empty list of teachers for calib and test")
    for a, b in zip(teachers_calib, teachers_test):
        if a.name != b.name:
            raise ValueError(f"teacher order differs between splits: {a.name} vs {b.name}")
    # Fail fast on non-probability confidences (needed for ECE/Brier) before any work.
    metrics.check_probabilities(_check_pair(student_test, teachers_test[0]))
    metrics.check_probabilities(_check_pair(student_calib, teachers_calib[0]))

    k = max(range(len(teachers_calib)), key=lambda i: (teachers_calib[i].accuracy, -i))
    if threshold is None:  # callers with their own rule (cost budgets, Learn-then-Test) pass one
        threshold = fit_threshold(student_calib, teachers_calib[k], target_accuracy, max_teacher_share)
    calib = cascade_outcome(student_calib, teachers_calib[k], threshold)

    s, t = student_test, teachers_test[k]
    out = cascade_outcome(s, t, threshold)
    share = out["teacher_share"]
    # Random routing at the cascade's share, as expected per-item correctness so the
    # cascade-minus-random difference can be bootstrapped item by item (paired).
    rand = (1 - share) * s.correct + share * t.correct
    orc = oracle_routing(s, t)
    st = int(s.tokens.sum())
    rows = [_row(s.name, "student", s.correct, 0.0, 0, st, seed)]
    rows += [_row(m.name, "teacher", m.correct, 1.0, m.tokens.sum(), m.tokens.sum(), seed)
             for m in teachers_test]
    rows += [
        _row("cascade", "cascade", out["correct"], share, out["teacher_tokens"], out["tokens"],
             seed),
        _row("random routing (same share)", "random", rand, share, share * t.tokens.sum(),
             st + share * t.tokens.sum(), seed),
        _row("oracle routing", "oracle", s.correct | t.correct, orc["teacher_share"],
             orc["teacher_tokens"], orc["tokens"], seed),
    ]
    diff = bootstrap_ci(lambda a, b: float(np.mean(a - b)),
                                out["correct"].astype(float), rand, seed=seed)
    curve = cascade_curve(s, t)
    return CascadeResult(
        student=s.name, cascade_teacher=t.name, threshold=float(threshold),
        fit=Fit(target_accuracy=target_accuracy, max_teacher_share=max_teacher_share, n_calib=student_calib.n,
                calib_accuracy=calib["accuracy"], calib_teacher_share=calib["teacher_share"],
                teacher_calib_accuracy={m.name: m.accuracy for m in teachers_calib}),
        n_test=s.n, rows=rows,
        cascade_vs_random=VersusRandom(teacher_share=share, random_accuracy=float(rand.mean()), difference=diff[0],
                                       ci_low=diff[1], ci_high=diff[2]),
        curve=curve, apgr=metrics.apgr(curve, s.accuracy, t.accuracy),
        cpt_50=metrics.cpt(curve, s.accuracy, t.accuracy, 0.5), cpt_80=metrics.cpt(curve, s.accuracy, t.accuracy, 0.8))
