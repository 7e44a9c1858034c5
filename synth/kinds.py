"""Every kind of teacher signal `distill synth --kind` makes, by name: one registry entry each.

A kind is a function (store, teacher, pool, run_id, SynthSettings) -> counts; adding one is an
entry in KINDS, not a branch in the CLI. Stage modules are imported when their kind runs, so
importing this registry (the CLI's `--help` does) loads neither duckdb nor a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from core.errors import DistillError

if TYPE_CHECKING:
    from clients.teachers import Teacher
    from store.store import Store


@dataclass(frozen=True)
class SynthSettings:
    """What `distill synth` passes every kind (each kind reads the fields it needs)."""
    split: str = "train"
    limit: int | None = None
    samples: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 64
    examples: int = 2
    seed: int = 0

    def check(self) -> None:
        """One line for the first value that cannot work (the CLI's flag types refuse them earlier)."""
        if self.split not in ("train", "calibration", "test"):
            raise DistillError(f"split {self.split!r}: use train, calibration or test")
        if (self.limit is not None and self.limit < 1) or self.samples < 1 or self.max_new_tokens < 1 \
                or self.examples < 0:
            raise DistillError("synth needs limit >= 1, samples >= 1, max_new_tokens >= 1 and examples >= 0 "
                               f"(got {self.limit}, {self.samples}, {self.max_new_tokens}, {self.examples})")
        if not 0 <= self.temperature <= 5:
            raise DistillError(f"temperature must be between 0 and 5, got {self.temperature}")


def _cot(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.cot import CotParams, generate_traces

    params = CotParams(num_samples=s.samples, temperature=s.temperature, max_new_tokens=s.max_new_tokens,
                       num_examples=s.examples, seed=s.seed)
    return generate_traces(store, teacher, pool, params, run_id, split=s.split, limit=s.limit)


def _critique(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.critique import critique_traces

    return critique_traces(store, teacher, pool, run_id, s.max_new_tokens, s.limit)


def _revise(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.critique import revise_traces

    return revise_traces(store, teacher, pool, run_id, s.max_new_tokens, s.limit)


def _judge(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.critique import judge_traces

    return judge_traces(store, teacher, pool, run_id, limit=s.limit)


def _judge_pairs(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.critique import judge_pairs

    return judge_pairs(store, teacher, pool, run_id, limit=s.limit)


def _expand(method: str) -> Callable[..., dict]:
    def run(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
        from synth.expand import expand_prompts

        return expand_prompts(store, teacher, pool, run_id, method=method, count=s.limit or 16, seed=s.seed)
    return run


def _recorded(store: Store, teacher: Any, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.recorded import import_recorded

    return import_recorded(store, pool, run_id)


def _react(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.react import generate_trajectories

    return generate_trajectories(store, teacher, pool, run_id, max_new_tokens=s.max_new_tokens, limit=s.limit,
                                 split=s.split)


def _bfcl(store: Store, teacher: Teacher, pool: str, run_id: str, s: SynthSettings) -> dict:
    from synth.react import generate_bfcl_calls

    return generate_bfcl_calls(store, teacher, pool, run_id, max_new_tokens=s.max_new_tokens, limit=s.limit,
                               split=s.split)


KINDS: dict[str, Callable[..., dict]] = {
    "cot": _cot,
    "critique": _critique,
    "revise": _revise,
    "judge": _judge,
    "judge-pairs": _judge_pairs,
    "self-instruct": _expand("self_instruct"),
    "evolve": _expand("evolve"),
    "import-recorded": _recorded,
    "react": _react,
    "bfcl": _bfcl,
}
NEEDS_NO_TEACHER = ("import-recorded",)


def run_kind(kind: str, store: Store, teacher: Teacher | None, pool: str, run_id: str,
             settings: SynthSettings = SynthSettings()) -> dict:
    """Run one kind of teacher signal on a pool; every kind reads and writes the store."""
    if kind not in KINDS:
        raise DistillError(f"unknown kind '{kind}': use one of {', '.join(KINDS)}")
    settings.check()
    if teacher is None and kind not in NEEDS_NO_TEACHER:
        raise DistillError(f"synth --kind {kind} needs --teacher (e.g. --teacher gemma-3-270m)")
    return KINDS[kind](store, teacher, pool, run_id, settings)
