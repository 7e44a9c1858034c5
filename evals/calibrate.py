"""Confidence calibration and cascade thresholds, fitted on the calibration split only.

Every confidence signal (evals/signals.py) is a number in [0, 1] where higher means the
student is surer, so one set of calibrators serves them all:

- ``temperature``: p' = sigmoid(logit(p) / T), one parameter (scaling the confidence
  logit; for multiple choice this is temperature scaling of the top option's log-odds);
- ``platt``: p' = sigmoid(a * logit(p) + b);
- ``isotonic``: a non-decreasing step function (scikit-learn's IsotonicRegression).

Each is fitted to the student's correctness by maximum likelihood and is monotone, so
the routing order never changes: calibration changes what a threshold *means*, which is
what lets a user read "escalate below 0.7" as "escalate when the student is right less
than 70% of the time".

Thresholds: for a target accuracy, a teacher-call budget or a cost budget, and optionally
with a Learn-then-Test guarantee (Angelopoulos et al. 2021): thresholds are tested in a
fixed sequence from the all-teacher end with an exact binomial p-value, so with
probability >= 1 - delta the chosen cascade's accuracy on new data meets the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

METHODS = ("none", "temperature", "platt", "isotonic")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(x, -500, 500)))


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass
class Calibrator:
    """A fitted monotone map from a raw confidence to P(student correct); JSON round-trips."""

    method: str = "none"
    params: dict = field(default_factory=dict)

    def apply(self, raw: np.ndarray | list[float]) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "none":
            return np.clip(raw, 0.0, 1.0)
        if self.method == "temperature":
            return _sigmoid(_logit(raw) / self.params["temperature"])
        if self.method == "platt":
            return _sigmoid(self.params["a"] * _logit(raw) + self.params["b"])
        if self.method == "isotonic":
            return np.interp(raw, self.params["x"], self.params["y"])
        raise ValueError(f"unknown calibration method {self.method!r}: use one of {', '.join(METHODS)}")

    def to_dict(self) -> dict:
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        return cls(method=d["method"], params=dict(d.get("params") or {}))


def fit_calibrator(method: str, raw: np.ndarray | list[float], correct: np.ndarray | list[bool]) -> Calibrator:
    """Fit `method` so the calibrated confidence predicts the student's correctness."""
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: use one of {', '.join(METHODS)}")
    raw = np.asarray(raw, dtype=float)
    y = np.asarray(correct, dtype=float)
    if raw.shape != y.shape or raw.size == 0:
        raise ValueError("calibration needs one confidence per labelled item")
    if method == "none" or y.min() == y.max():  # one class: nothing to fit, keep the raw score
        return Calibrator("none")
    x = _logit(raw)
    if method == "temperature":
        res = optimize.minimize_scalar(lambda log_t: _nll(_sigmoid(x / math.exp(log_t)), y),
                                       bounds=(-5, 5), method="bounded")
        return Calibrator("temperature", {"temperature": math.exp(res.x)})
    if method == "platt":
        res = optimize.minimize(lambda ab: _nll(_sigmoid(ab[0] * x + ab[1]), y), x0=[1.0, 0.0],
                                method="L-BFGS-B", bounds=[(1e-3, 100), (-50, 50)])  # a > 0 keeps order
        return Calibrator("platt", {"a": float(res.x[0]), "b": float(res.x[1])})
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
    return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})


# --- thresholds -------------------------------------------------------------------


def ltt_p_value(n_correct: int, n: int, target_accuracy: float) -> float:
    """Exact binomial p-value of H0 "accuracy < target" given n_correct of n (small = reject)."""
    if n == 0:
        return 1.0
    # Under H0 at its boundary the error count is Binomial(n, 1 - target); few errors are evidence.
    return float(stats.binom.cdf(n - n_correct, n, 1 - target_accuracy))


def batch_safe_target(target_accuracy: float, batch_size: int, alpha: float) -> float:
    """The smallest true accuracy at which a batch of `batch_size` queries still scores at least
    `target_accuracy` with probability >= 1 - alpha (binomial noise of the batch itself)."""
    need = math.ceil(target_accuracy * batch_size - 1e-9)  # right answers the batch needs
    if need <= 0:
        return target_accuracy
    below = lambda p: float(stats.binom.cdf(need - 1, batch_size, p)) - alpha  # noqa: E731
    if below(target_accuracy) <= 0:
        return target_accuracy
    return float(optimize.brentq(below, target_accuracy, 1.0)) if below(1.0) < 0 else 1.0


def choose_threshold(curve: list[dict], n: int, *, target_accuracy: float | None = None,
                     max_teacher_share: float | None = None, max_cost_per_1k: float | None = None,
                     delta: float | None = None, batch_size: int | None = None) -> dict:
    """Pick a point of a calibration-split cascade curve (points sorted by teacher share).

    Each point has threshold, teacher_share, accuracy and cost_per_1k. Budgets filter the
    points; with a target the cheapest point meeting it wins (with `delta`, meeting it means
    the Learn-then-Test test rejects "accuracy < target" at level delta, walking from the
    all-teacher end and stopping at the first failure); otherwise the most accurate point.
    Returns the chosen point plus `reached` (did the target hold on calibration).

    Learn-then-Test bounds the TRUE accuracy; a finite test split still scatters around it. With
    `batch_size` the guarantee is about a batch of that many queries instead: the test runs at
    delta/2 against `batch_safe_target(target, batch_size, delta/2)`, so by a union bound the
    batch meets the target with probability >= 1 - delta.
    """
    for name, v in (("target_accuracy", target_accuracy), ("max_teacher_share", max_teacher_share),
                    ("delta", delta)):
        if v is not None and not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v}")
    if delta is not None and target_accuracy is None:
        raise ValueError("a Learn-then-Test guarantee (delta) needs a target accuracy")
    eps = 1e-12
    feasible = [p for p in curve
                if (max_teacher_share is None or p["teacher_share"] <= max_teacher_share + eps)
                and (max_cost_per_1k is None or p["cost_per_1k"] <= max_cost_per_1k + eps)]
    if not feasible:  # even all-student breaks the budget: all-student is the cheapest there is
        feasible = [min(curve, key=lambda p: p["cost_per_1k"])]
    best = max(feasible, key=lambda p: (p["accuracy"], -p["teacher_share"]))
    if target_accuracy is None:
        return dict(best, reached=None)
    if delta is None:
        hits = [p for p in feasible if p["accuracy"] >= target_accuracy - eps]
        return dict(min(hits, key=lambda p: p["teacher_share"]), reached=True) if hits else dict(best, reached=False)
    # Fixed-sequence testing walks from the safer end: all-teacher when the teacher is the more
    # accurate model on calibration (the usual case), else all-student (a weak teacher makes risk
    # fall, not rise, with the student's share). Every point passed before the first failure is
    # certified; the cheapest of them is chosen.
    level, bar = delta, target_accuracy
    if batch_size:
        level = delta / 2
        bar = batch_safe_target(target_accuracy, batch_size, level)
    teacher_end = max(feasible, key=lambda p: p["teacher_share"])
    student_end = min(feasible, key=lambda p: p["teacher_share"])
    descending = teacher_end["accuracy"] >= student_end["accuracy"]
    passed = []
    for p in sorted(feasible, key=lambda p: -p["teacher_share"] if descending else p["teacher_share"]):
        k = int(round(p["accuracy"] * n))
        # A lax delta (>= 0.5) could pass a point below the target; the guarantee never asks for less.
        if ltt_p_value(k, n, bar) > level or p["accuracy"] < bar - eps:
            break
        passed.append(p)
    chosen = min(passed, key=lambda p: p["teacher_share"]) if passed else None
    guarantee = {"tested_accuracy": bar, "level": level, "batch_size": batch_size}
    if chosen is None:
        return dict(best, reached=False, guarantee=guarantee)
    return dict(chosen, reached=True, guarantee=guarantee)
