"""synth.kinds: every `distill synth --kind` is one registry entry, run through one function."""
import pytest

from core.errors import DistillError
from synth.kinds import KINDS, NEEDS_NO_TEACHER, SynthSettings, run_kind
from tests.doubles import ScriptedTeacher


def test_cot_through_the_registry_writes_traces(store, pool):
    teacher = ScriptedTeacher("t", ["Reasoning: pears float.\nAnswer: No"])
    out = run_kind("cot", store, teacher, pool, "r1", SynthSettings(samples=1, limit=3))
    assert store.count("samples", "kind = 'cot'") == 3 and out


def test_unknown_kind_and_missing_teacher_are_clear_errors(store, pool):
    with pytest.raises(DistillError, match="unknown kind 'poems': use one of cot, critique"):
        run_kind("poems", store, None, pool, "r")
    with pytest.raises(DistillError, match="--kind judge needs --teacher"):
        run_kind("judge", store, None, pool, "r")
    assert store.count("samples") == 0


def test_every_kind_but_recorded_import_needs_a_teacher():
    assert set(NEEDS_NO_TEACHER) < set(KINDS) and len(KINDS) == 10
