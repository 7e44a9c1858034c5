"""Shared fixtures: a store on a temp file and a small labelled pool loaded into it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.store import Store
from prompts.rows import PromptRow, split_for, stable_id

QUESTIONS = [
    ("Would a pear sink in water?", "No", "Pears are less dense than water."),
    ("Is the sun a star?", "Yes", "The sun is a main-sequence star."),
    ("Can a fish climb trees?", "No", "Most fish cannot leave water."),
    ("Is ice cold?", "Yes", "Ice is frozen water, below zero degrees."),
    ("Do cats bark?", "No", "Barking is what dogs do."),
    ("Is Paris in France?", "Yes", "Paris is the capital of France."),
    ("Is two bigger than three?", "No", "Two is less than three."),
    ("Do birds have feathers?", "Yes", "All birds have feathers."),
]


def make_rows(n: int = 40) -> list[PromptRow]:
    rows = []
    for i in range(n):
        q, gold, why = QUESTIONS[i % len(QUESTIONS)]
        text = f"{q} (variant {i})"
        rid = stable_id("test", text)
        rows.append(PromptRow(id=rid, source="test", task="yesno", input=text, gold=gold,
                              split=split_for(rid), choices=["Yes", "No"], rationale=why))
    return rows


# The machine's cache, read once at start-up: a module fixture that points DISTILL_CACHE at a
# temp dir must not make a later real-model test convert the GGUF models again (60+ s each).
MACHINE_CACHE = Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "distill")


@pytest.fixture
def machine_cache(monkeypatch) -> Path:
    """DISTILL_CACHE set to the machine's cache, where real models convert once per machine."""
    monkeypatch.setenv("DISTILL_CACHE", str(MACHINE_CACHE))
    return MACHINE_CACHE


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.duckdb") as s:
        yield s


@pytest.fixture
def pool(store):
    store.add_prompts(make_rows(), "yesno")
    return "yesno"


@pytest.fixture
def rows():
    return make_rows()
