"""BIG-bench loader: fast tests on a fake tarball or folder; real-sdist tests only if you have a copy."""
from __future__ import annotations

import collections
import json
import subprocess
import time

import pytest

from core.errors import DistillError
from prompts.bigbench import (
    bigbench_available,
    bigbench_task_names,
    fetch_bigbench,
    load_bigbench,
)


def _no_subprocess(*args, **kwargs):
    raise AssertionError("nothing may be downloaded: the package index no longer serves bigbench")


# ---------------------------------------------------------------- fetch (never downloads)

def test_fetch_returns_the_cached_tarball(mini_cache, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    assert fetch_bigbench() == mini_cache / "bigbench-1.0.0.tar.gz"


def test_fetch_returns_an_extracted_folder(mini_folder_cache, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    assert fetch_bigbench() == mini_folder_cache / "benchmark_tasks"


def test_fetch_without_a_copy_is_one_clear_line_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", _no_subprocess)
    with pytest.raises(DistillError) as err:
        fetch_bigbench(tmp_path, quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and "no longer serves bigbench==1.0.0" in msg
    assert "bigbench-1.0.0.tar.gz" in msg and "benchmark_tasks/" in msg and str(tmp_path) in msg
    assert "distill data list" in msg
    assert not bigbench_available(tmp_path) and not list(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------- loading (fast)

def test_loads_rows_with_choices_gold_rationale_and_prefix(mini_cache):
    rows = load_bigbench("toyqa")
    assert len(rows) == 3  # the repeated "Is water wet?" example is dropped
    wet, fire, prime = rows
    assert wet.source == "bigbench" and wet.task == "toyqa"
    assert wet.input == "Is water wet?" and wet.choices == ["Yes", "No"] and wet.gold == "Yes"
    assert wet.rationale == "Water makes things wet."  # the answer is stripped off
    assert fire.gold == "No" and fire.rationale is None  # target == gold: no rationale
    assert wet.meta["task_prefix"] == "Answer the question.\nQ:" and wet.meta["subtask"] is None
    assert prime.gold == "3" and prime.meta["golds"] == ["3", "5"]
    assert prime.meta["extra"] == {"comment": "tie"}
    assert all(r.split in ("train", "calibration", "test") for r in rows)


def test_generative_task_uses_target_as_gold(mini_cache):
    paris, four = load_bigbench("gen")
    assert paris.choices is None and paris.gold == "Paris" and paris.meta["golds"] == ["Paris", "paris"]
    assert four.gold == "4" and "golds" not in four.meta


def test_subtasks_merge_or_load_alone_with_stable_ids(mini_cache):
    merged = load_bigbench("multi")
    assert [r.input for r in merged] == ["a1", "shared", "b1"]  # "shared" deduped across subtasks
    assert [r.meta["subtask"] for r in merged] == ["a", "a", "b"]
    assert {r.task for r in merged} == {"multi"}
    only_b = load_bigbench("multi:b")
    assert [r.input for r in only_b] == ["shared", "b1"]
    assert only_b[0].meta["task_prefix"] == "Child prefix."
    assert merged[0].meta["task_prefix"] == "Parent prefix."  # falls back to the parent
    # A row has the same id (hence split) however it was loaded.
    by_id = {r.id: r.split for r in merged}
    assert all(by_id[r.id] == r.split for r in only_b)
    assert load_bigbench("onlysub")[0].gold == "r"  # no top-level task.json at all


def test_task_names_index_and_cache_without_tarball(mini_cache):
    names = bigbench_task_names()
    assert names == ["gen", "multi", "multi:a", "multi:b", "onlysub", "onlysub:x", "toyqa"]
    assert bigbench_task_names(include_subtasks=False) == ["gen", "multi", "onlysub", "toyqa"]
    index = json.loads((mini_cache / "index.json").read_text())
    assert index["programmatic"] == ["prog"]
    assert (mini_cache / "tasks" / "multi" / "a.json").exists()
    # Everything was extracted in one pass: the tarball is no longer needed.
    (mini_cache / "bigbench-1.0.0.tar.gz").unlink()
    assert len(load_bigbench("toyqa")) == 3 and len(load_bigbench("multi:a")) == 2


def test_splits_are_deterministic_and_follow_fractions(mini_cache):
    first = [(r.id, r.split) for r in load_bigbench("toyqa")]
    assert first == [(r.id, r.split) for r in load_bigbench("toyqa")]
    assert {r.split for r in load_bigbench("toyqa", calibration=0.0, test=1.0)} == {"test"}
    assert {r.split for r in load_bigbench("toyqa", calibration=0.0, test=0.0)} == {"train"}


@pytest.mark.parametrize("task, pattern", [
    ("nope", r"unknown BIG-bench task 'nope': pick one of `distill data list bigbench`"),
    ("toyq", r"\(e\.g\. toyqa\)"),  # suggests the closest name
    ("multi:zzz", r"unknown BIG-bench task 'multi:zzz'"),
    ("prog", r"programmatic"),
])
def test_bad_task_names(mini_cache, task, pattern):
    with pytest.raises(DistillError, match=pattern):
        load_bigbench(task)


def test_missing_copy_says_how_to_bring_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    for call in (lambda: load_bigbench("strategyqa"), bigbench_task_names):
        with pytest.raises(DistillError, match=r"no longer serves bigbench==1\.0\.0; put bigbench-1\.0\.0\.tar\.gz "
                                               r"or an extracted benchmark_tasks/ folder in .*bigbench"):
            call()


# ---------------------------------------------------------------- an extracted benchmark_tasks/ folder

def test_extracted_folder_loads_like_the_tarball(mini_folder_cache, make_mini_tarball, tmp_path_factory):
    assert bigbench_available()
    names = bigbench_task_names()
    assert names == ["gen", "multi", "multi:a", "multi:b", "onlysub", "onlysub:x", "toyqa"]
    assert not (mini_folder_cache / "index.json").exists()  # read in place: nothing copied
    with pytest.raises(DistillError, match="programmatic"):
        load_bigbench("prog")
    from_tar = tmp_path_factory.mktemp("tar")
    make_mini_tarball(from_tar)
    for task in ("toyqa", "gen", "multi", "multi:b", "onlysub"):
        folder_rows = load_bigbench(task)
        tar_rows = load_bigbench(task, cache=from_tar)
        assert [(r.id, r.split, r.input, r.gold, r.choices, r.rationale, r.meta) for r in folder_rows] == \
               [(r.id, r.split, r.input, r.gold, r.choices, r.rationale, r.meta) for r in tar_rows]


def test_corrupt_tarball_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    (tmp_path / "bigbench").mkdir()
    (tmp_path / "bigbench" / "bigbench-1.0.0.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DistillError, match="delete it"):
        bigbench_task_names()
    assert not (tmp_path / "bigbench" / "tasks").exists()


# ---------------------------------------------------------------- the real sdist (slow; skipped without a copy)

@pytest.mark.slow
def test_real_strategyqa_has_human_rationales(real_bigbench):
    start = time.perf_counter()
    rows = load_bigbench("strategyqa", cache=real_bigbench)
    assert time.perf_counter() - start < 5  # served from the extracted cache
    assert 2280 <= len(rows) <= 2290
    assert {r.gold for r in rows} == {"Yes", "No"}
    assert all(r.choices == ["Yes", "No"] for r in rows)
    assert all(r.rationale and not r.rationale.startswith(("Yes.", "No.")) for r in rows)


@pytest.mark.slow
def test_real_elementary_math_qa_is_five_way_and_splits_60_20_20(real_bigbench):
    rows = load_bigbench("elementary_math_qa:question_only", cache=real_bigbench)
    assert len(rows) == 7688
    sizes = collections.Counter(len(r.choices) for r in rows)
    assert sizes.most_common(1)[0] == (5, 7500)
    assert all(r.gold in r.choices for r in rows)
    shares = collections.Counter(r.split for r in rows)
    for split, want in (("train", 0.6), ("calibration", 0.2), ("test", 0.2)):
        assert abs(shares[split] / len(rows) - want) < 0.02
    again = load_bigbench("elementary_math_qa:question_only", cache=real_bigbench)
    assert [(r.id, r.split) for r in again] == [(r.id, r.split) for r in rows]


@pytest.mark.slow
def test_real_task_with_subtasks(real_bigbench):
    rows = load_bigbench("arithmetic", cache=real_bigbench)
    subtasks = {r.meta["subtask"] for r in rows}
    assert len(subtasks) == 20 and "1_digit_addition" in subtasks
    one = load_bigbench("arithmetic:1_digit_addition", cache=real_bigbench)
    assert len(one) == 100 and one[0].input == "What is 0 plus 0?" and one[0].gold == "0"
    assert len(load_bigbench("elementary_math_qa", cache=real_bigbench)) > 30000


@pytest.mark.slow
def test_real_names_and_programmatic_tasks(real_bigbench):
    names = bigbench_task_names(real_bigbench)
    assert "strategyqa" in names and "arithmetic:1_digit_addition" in names
    assert "boolean_expressions" not in names
    with pytest.raises(DistillError, match="programmatic"):
        load_bigbench("boolean_expressions", cache=real_bigbench)
    for task in ("intent_recognition", "hhh_alignment", "social_iqa", "vitaminc_fact_verification"):
        assert load_bigbench(task, cache=real_bigbench), task

