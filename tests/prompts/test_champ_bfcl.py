"""CHAMP and BFCL loaders, on the installed packages' real data."""
from __future__ import annotations

import collections
import json
import sys

import pytest

from core.errors import DistillError
from prompts.bfcl import bfcl_categories, load_bfcl
from prompts.champ import load_champ


@pytest.fixture(scope="module")
def champ():
    pytest.importorskip("champ_dataset")
    return load_champ()


def test_champ_has_270_problems_with_human_answers(champ):
    assert len(champ) == 270 and len({r.id for r in champ}) == 270
    first = champ[0]
    assert first.source == first.task == "champ" and first.choices is None
    assert first.gold == "239" and first.input.startswith("Let a string consist of digit 1, 2, 3.")
    assert first.rationale.startswith("Let x_n, y_n, z_n be")
    assert all(r.input and r.gold and r.rationale for r in champ)
    assert set(collections.Counter(r.split for r in champ)) == {"train", "calibration", "test"}


def test_champ_keeps_all_recorded_teacher_outputs(champ):
    recorded = [r.meta["recorded"] for r in champ]
    assert all(sorted(rec) == ["GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium"] for rec in recorded)
    entries = [e for rec in recorded for by_setting in rec.values() for e in by_setting.values()]
    assert len(entries) == 19440 and all(len(by) == 18 for rec in recorded for by in rec.values())
    zero_shot = champ[0].meta["recorded"]["GPT-4"]["0-Shot"]
    assert [m["role"] for m in zero_shot["prompt"]] == ["system", "user"]
    assert zero_shot["prompt"][1]["content"].endswith(champ[0].input)
    assert zero_shot["output"] and zero_shot["answer"] and zero_shot["truncated"] is False
    # 540 human first-wrong-step labels; 261 solutions cut off by the length limit.
    assert sum("first_wrong_step" in e for e in entries) == 540
    truncated = [e for e in entries if e["truncated"]]
    assert len(truncated) == 261 and all(e["answer"] is None for e in truncated)
    five_shot = champ[0].meta["recorded"]["GPT-3.5"]["5-Shot"]["prompt"]
    assert [m["role"] for m in five_shot[:4]] == ["system", "user", "assistant", "user"]
    json.dumps(champ[0].meta)  # plain JSON, storable as is


def test_champ_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "champ_dataset", None)
    with pytest.raises(DistillError, match=r"CHAMP is not installed: pip install champ-dataset"):
        load_champ()


@pytest.fixture
def bfcl():
    pytest.importorskip("bfcl_eval")


def test_bfcl_simple_has_functions_and_ground_truth(bfcl):
    rows = load_bfcl("simple")
    assert len(rows) == 400 and len({r.id for r in rows}) == 400
    first = rows[0]
    assert first.source == "bfcl" and first.task == "simple_python"
    assert first.input.startswith("Find the area of a triangle")
    assert first.meta["functions"][0]["name"] == "calculate_triangle_area"
    truth = json.loads(first.gold)
    assert truth[0]["calculate_triangle_area"]["base"] == [10]
    assert all(r.meta["functions"] and json.loads(r.gold) for r in rows)
    assert [r.split for r in rows] == [r.split for r in load_bfcl("simple_python")]


def test_bfcl_other_categories(bfcl):
    cats = bfcl_categories()
    assert {"simple_python", "multiple", "parallel", "live_simple", "irrelevance"} <= set(cats)
    assert not any(c.startswith(("multi_turn", "memory", "web_search")) for c in cats)
    assert len(json.loads(load_bfcl("parallel")[0].gold)) == 2
    irrelevant = load_bfcl("irrelevance")
    assert all(r.gold == "[]" and r.meta["check"] == "no_call" for r in irrelevant)
    live = load_bfcl("live_simple")
    assert any("messages" in r.meta for r in live)  # system prompts are kept


@pytest.mark.parametrize("category", ["nope", "multi_turn_base"])
def test_bfcl_unknown_category_lists_choices(bfcl, category):
    with pytest.raises(DistillError, match=r"use one of simple, .*simple_python"):
        load_bfcl(category)


def test_bfcl_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "bfcl_eval", None)
    with pytest.raises(DistillError, match=r"pip install --no-deps bfcl-eval"):
        load_bfcl()
