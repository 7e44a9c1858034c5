import json

import pytest

from curation.verify import verify_samples
from core.errors import DistillError
from synth.cot import CotParams, generate_traces
from curation.pairs import build_pairs, export_pairs
from tests.doubles import ScriptedTeacher


@pytest.fixture
def traced(store, pool):
    # Teacher says No then Yes for every prompt: exactly one of the two traces is verified.
    teacher = ScriptedTeacher("teacher", ["Because of density.\nAnswer: No", "It just is.\nAnswer: Yes"])
    generate_traces(store, teacher, pool, CotParams(num_samples=2), run_id="r1")
    student = ScriptedTeacher("student", ["Hmm.\nAnswer: maybe"])
    generate_traces(store, student, pool, CotParams(num_samples=1), run_id="r2")
    verify_samples(store, pool, "rv")
    return pool


def test_verified_pairs_prefer_the_correct_trace_and_export_trl_format(store, traced, tmp_path):
    out = build_pairs(store, traced, "rp", strategy="verified")
    train = store.prompts(traced, split="train")
    assert out["pairs"] == len(train)
    rows = store.query("SELECT c.answer AS chosen, r.answer AS rejected, p.gold FROM pairs x "
                       "JOIN samples c ON c.id = x.chosen_sample_id JOIN samples r ON r.id = x.rejected_sample_id "
                       "JOIN prompts p ON p.id = x.prompt_id")
    assert all(r["chosen"] == r["gold"] and r["rejected"] != r["gold"] for r in rows)

    exported = export_pairs(store, traced, tmp_path / "pairs.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert exported["rows"] == len(lines) == len(train)
    first = lines[0]
    assert [m["role"] for m in first["prompt"]] == ["user"]
    assert first["chosen"][0]["role"] == first["rejected"][0]["role"] == "assistant"
    assert first["chosen"][0]["content"] != first["rejected"][0]["content"]


def test_rebuilding_replaces_instead_of_duplicating(store, traced):
    build_pairs(store, traced, "rp", strategy="verified")
    n = store.count("pairs")
    build_pairs(store, traced, "rp2", strategy="verified")
    assert store.count("pairs") == n


def test_teacher_vs_student_pairs_prefer_the_teacher(store, traced):
    out = build_pairs(store, traced, "rp", strategy="teacher_vs_student", student="student")
    assert out["pairs"] == len(store.prompts(traced, split="train"))
    teachers = store.query("SELECT DISTINCT c.teacher AS c, r.teacher AS r FROM pairs x "
                           "JOIN samples c ON c.id = x.chosen_sample_id JOIN samples r ON r.id = x.rejected_sample_id")
    assert teachers == [{"c": "teacher", "r": "student"}]


def test_best_vs_worst_respects_margin(store, traced):
    assert build_pairs(store, traced, "rp", strategy="best_vs_worst", margin=0.5)["pairs"] > 0
    assert build_pairs(store, traced, "rp", strategy="best_vs_worst", margin=1.5)["pairs"] == 0


def test_bad_strategy_and_empty_export_are_clear_errors(store, traced, tmp_path):
    with pytest.raises(DistillError, match="unknown pair strategy"):
        build_pairs(store, traced, "r", strategy="nope")
    with pytest.raises(DistillError, match="no 'verified' pairs"):
        export_pairs(store, traced, tmp_path / "x.jsonl")
