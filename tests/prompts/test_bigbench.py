"""BIG-bench loader: fast tests on a fake tarball, slow tests on the real 358 MB sdist."""
from __future__ import annotations

import collections
import json
import subprocess
import time

import pytest

from distill.errors import DistillError
from prompts.bigbench import bigbench_task_names, fetch_bigbench, load_bigbench


def _no_pip(*args, **kwargs):
    raise AssertionError("pip must not run when the tarball is cached")


# ---------------------------------------------------------------- fetch (fast, pip faked)

def test_fetch_is_idempotent(mini_cache, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_pip)
    assert fetch_bigbench() == mini_cache / "bigbench-1.0.0.tar.gz"


def test_fetch_calls_pip_download_and_reports_failure_in_one_line(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "Collecting\nERROR: No matching distribution found\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DistillError) as err:
        fetch_bigbench(tmp_path, quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and "No matching distribution" in msg and "bigbench-1.0.0.tar.gz" in msg
    assert calls[0][1:] == ["-m", "pip", "download", "--no-deps", "bigbench==1.0.0",
                            "-d", str(tmp_path), "-q"]


def test_fetch_fails_if_pip_succeeds_without_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(DistillError, match="could not download"):
        fetch_bigbench(tmp_path)


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
    ("nope", r"unknown BIG-bench task 'nope': run `distill data fetch bigbench` and pick one of "
             r"`distill data list bigbench`"),
    ("toyq", r"\(e\.g\. toyqa\)"),  # suggests the closest name
    ("multi:zzz", r"unknown BIG-bench task 'multi:zzz'"),
    ("prog", r"programmatic"),
])
def test_bad_task_names(mini_cache, task, pattern):
    with pytest.raises(DistillError, match=pattern):
        load_bigbench(task)


def test_missing_tarball_says_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    with pytest.raises(DistillError, match="distill data fetch bigbench"):
        load_bigbench("strategyqa")


def test_corrupt_tarball_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    (tmp_path / "bigbench").mkdir()
    (tmp_path / "bigbench" / "bigbench-1.0.0.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DistillError, match="delete it"):
        bigbench_task_names()
    assert not (tmp_path / "bigbench" / "tasks").exists()


# ---------------------------------------------------------------- the real sdist (slow)

@pytest.mark.slow
def test_real_fetch_downloads_with_pip(tmp_path, monkeypatch):
    tar = fetch_bigbench(tmp_path, quiet=True)  # really runs pip download (~20 s)
    assert tar.name == "bigbench-1.0.0.tar.gz" and tar.stat().st_size > 300_000_000
    monkeypatch.setattr(subprocess, "run", _no_pip)
    assert fetch_bigbench(tmp_path) == tar


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

