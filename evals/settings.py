"""`CascadeSettings`: how a cascade evaluation is fitted and scored, checked before anything runs.

Light on purpose (no model code): the CLI builds and checks it before any model loads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import DistillError
from evals.calibrate import METHODS
from evals.signals import SIGNALS, check_scoring_options


@dataclass
class CascadeSettings:
    """How `evaluate_task` fits and scores the cascade: `distill eval cascade`'s flags, typed."""

    signal: str = "auto"  # a name in evals.signals.SIGNALS, or auto (best AUROC on calibration)
    calibration: str = "platt"  # evals.calibrate.METHODS
    target_accuracy: float | None = None
    max_teacher_share: float | None = None
    max_cost_per_1k: float | None = None  # USD per 1,000 queries; needs prices
    delta: float | None = None  # Learn-then-Test risk level for target_accuracy
    prices: dict[str, float] = field(default_factory=dict)  # USD per 1M tokens by model name
    shots: int = 3
    balanced_shots: bool = False
    variants: int = 1
    self_verify: bool = False
    limit: int | None = None  # rows per split
    kd_baseline: bool = True
    kd_train: int = 200
    resplits: int = 20
    rationales: int = 32
    debias: str = "none"
    prompt_style: str = "mc"
    committee: bool = False
    seed: int = 0

    def check(self) -> None:
        """One clear line for the first setting that cannot work, before anything is loaded or run."""
        if self.signal not in (*SIGNALS, "auto"):
            raise DistillError(f"unknown signal '{self.signal}': use one of {', '.join(SIGNALS)} or auto")
        if self.calibration not in METHODS:
            raise DistillError(f"unknown calibration '{self.calibration}': use one of {', '.join(METHODS)}")
        check_scoring_options(self.debias, self.prompt_style)
        for name in ("target_accuracy", "max_teacher_share", "delta"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise DistillError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
        if self.delta is not None and self.target_accuracy is None:
            raise DistillError("--delta is a guarantee on --target-accuracy: give both")
        if self.max_cost_per_1k is not None and not self.max_cost_per_1k >= 0:
            raise DistillError(f"--max-cost-per-1k must be a cost >= 0 in USD, got {self.max_cost_per_1k}")
        if self.max_cost_per_1k is not None and not self.prices:
            raise DistillError("--max-cost-per-1k needs model prices: add --price MODEL=USD_PER_1M_TOKENS")
        if self.variants < 1 or self.shots < 0:
            raise DistillError(f"--variants must be >= 1 and --shots >= 0 (got {self.variants} and {self.shots})")
        if self.signal == "agreement" and self.variants < 2:
            raise DistillError("signal 'agreement' needs answers to several prompt variants: use --variants 3")
