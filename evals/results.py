"""The typed result of a cascade evaluation, read by the report, the demo and the CLI.

`evals.cascade.evaluate` fills the core (rows, threshold, cascade vs random), `evals.analysis.analyse`
adds the calibrated-signal analysis and `evals.task_eval.evaluate_task` the task-level parts
(baselines, re-splits, the KD baseline). A field renamed here fails at once wherever it is
read, instead of turning into a silent "n/a" in a report.

Metric values may be None or NaN (undefined: no gap to recover, one class on a split); the
report renders them as "n/a". `to_dict` gives plain JSON types (inf and NaN become None) for
results.json and the store.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @classmethod
    def of(cls, estimate: tuple[float, float, float]) -> Interval:
        """From `core.stats.bootstrap_ci`'s (value, low, high)."""
        return cls(*(float(x) for x in estimate))


@dataclass
class Row:
    """One line of the results table: a model, a routing rule or a baseline, scored on test."""

    model: str
    role: str  # student, student before, teacher, cascade, random, oracle, chain, kd-baseline
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    teacher_share: float | None
    n: int
    tokens_per_1k: float | None = None
    teacher_tokens_per_1k: float | None = None
    cost_per_1k_usd: float | None = None
    latency_per_1k_s: float | None = None


@dataclass
class VersusRandom:
    """The cascade minus random routing at the cascade's teacher share (paired bootstrap)."""

    teacher_share: float | None = None
    random_accuracy: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Fit:
    """What the threshold was fitted for on the calibration split, and what it reached there."""

    target_accuracy: float | None = None
    max_teacher_share: float | None = None
    n_calib: int | None = None
    calib_accuracy: float | None = None
    calib_teacher_share: float | None = None
    teacher_calib_accuracy: dict[str, float] = field(default_factory=dict)
    chosen: dict[str, Any] = field(default_factory=dict)  # evals.calibrate.choose_threshold's point
    delta: float | None = None
    max_cost_per_1k: float | None = None
    calibration_method: str | None = None


@dataclass
class ConfidenceQuality:
    """How well the student's confidence tells right from wrong answers, on test."""

    ece: Interval = field(default_factory=Interval)
    brier: Interval = field(default_factory=Interval)
    auroc: Interval = field(default_factory=Interval)
    bins: list[dict[str, Any]] = field(default_factory=list)  # evals.metrics.reliability_bins


@dataclass
class Fidelity:
    """How often the student agrees with the cascade teacher, and how similar their rationales are."""

    teacher: str | None = None
    answer_agreement: Interval = field(default_factory=Interval)
    agreement_when_teacher_right: float | None = None
    rationales: RationaleFidelity | None = None


@dataclass
class Slice:
    """Accuracy of the student, the teacher and the cascade on one group of test items."""

    slice: str
    n: int
    student: float | None
    teacher: float | None
    cascade: float | None


@dataclass
class ResplitRun:
    """One random 50/50 re-split: fitted on one half, scored on the other."""

    signal: str
    test_accuracy: float
    teacher_share: float
    calib_accuracy: float
    reached_on_calibration: bool | None  # None: no target to reach
    held: bool


@dataclass
class Resplits:
    """How often the accuracy target fitted on calibration held on new data (evals.resplit)."""

    target_accuracy: float
    delta: float | None
    signal: str
    calibration: str
    n: int
    hits: int
    rate: float
    mean_teacher_share: float
    runs: list[ResplitRun]


@dataclass
class SimilarityStat(Interval):
    """Mean rationale similarity over `n` items, with its interval (all None when n is 0)."""

    n: int = 0


@dataclass
class RationaleExample:
    input: str
    student_answer: str
    student: str  # the student's explanation
    teacher_answer: str
    teacher: str
    similarity: float


@dataclass
class RationaleFidelity:
    """How similar the two models' explanations of their own answers are (evals.rationales)."""

    model: str  # the embedding model
    n: int
    teacher: str
    similarity: SimilarityStat
    when_answers_agree: SimilarityStat
    when_answers_differ: SimilarityStat
    empty_explanations: dict[str, int]  # student, teacher
    examples: list[RationaleExample]


@dataclass
class BaselineCascade:
    """The same cascade fitted for another student (the one before distillation)."""

    signal: str
    cascade_teacher: str
    cascade_vs_random: VersusRandom
    curve_vs_random: Interval
    rows: list[Row]


@dataclass
class CascadeResult:
    """Everything a cascade evaluation measured; see the module docstring for who fills what."""

    student: str
    cascade_teacher: str
    threshold: float  # may be +/-inf: everything escalates / nothing does
    fit: Fit
    n_test: int
    rows: list[Row]
    cascade_vs_random: VersusRandom
    curve: list[dict[str, Any]]  # evals.cascade.cascade_curve on test
    apgr: float | None
    cpt_50: float | None
    cpt_80: float | None
    # evals.analysis.analyse
    signal: str | None = None
    signal_selection: dict[str, Any] | None = None  # --signal auto: calibration AUROC per signal
    calibrator: dict[str, Any] = field(default_factory=dict)
    learned_head: dict[str, Any] | None = None
    curve_vs_random: Interval = field(default_factory=Interval)
    metric_cis: dict[str, Interval] = field(default_factory=dict)  # apgr, cpt_50, cpt_80
    confidence_quality: dict[str, ConfidenceQuality] = field(default_factory=dict)  # before, after
    risk_coverage: list[dict[str, Any]] = field(default_factory=list)
    aurc: float | None = None
    fidelity: Fidelity = field(default_factory=Fidelity)
    slices: list[Slice] = field(default_factory=list)
    prices_per_1m_tokens: dict[str, float] = field(default_factory=dict)
    chain: dict[str, Any] | None = None  # student -> teacher 1 -> ... (several teachers)
    # evals.task_eval.evaluate_task
    task: str | None = None
    split_sizes: dict[str, int] | None = None
    baseline_cascades: dict[str, BaselineCascade] = field(default_factory=dict)
    kd_baseline: dict[str, Any] | None = None
    resplits: Resplits | None = None

    @property
    def threshold_text(self) -> str:
        """The threshold as text, keeping the sign of an infinite one (JSON stores it as null)."""
        return repr(self.threshold) if math.isfinite(self.threshold) else str(self.threshold)

    def rows_of(self, role: str) -> list[Row]:
        return [r for r in self.rows if r.role == role]

    def row(self, role: str) -> Row | None:
        """The first row with this role, or None."""
        return next(iter(self.rows_of(role)), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types for results.json and the store; adds threshold_text."""
        return {**jsonable(self), "threshold_text": self.threshold_text}


def jsonable(obj: Any) -> Any:
    """Dataclasses and numpy -> Python types; inf/nan -> None, so json.dumps(allow_nan=False) works."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj
