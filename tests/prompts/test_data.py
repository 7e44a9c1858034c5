"""load_task: one spec string picks the loader."""
from __future__ import annotations

import json

import pytest

from distill.errors import DistillError
from prompts import data


def test_bigbench_spec(mini_cache):
    rows = data.load_task("bigbench:multi:a", test=1.0, calibration=0.0)
    assert [r.input for r in rows] == ["a1", "shared"] and {r.split for r in rows} == {"test"}


def test_file_spec(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"q": "hi", "a": "hello"}) + "\n")
    rows = data.load_task(str(path), input_col="q", label_col="a")
    assert rows[0].input == "hi" and rows[0].gold == "hello"
    with pytest.raises(DistillError, match="no such file"):
        data.load_task(str(tmp_path / "missing.csv"))


def test_champ_and_bfcl_specs(monkeypatch):
    calls = []
    monkeypatch.setattr(data, "load_champ", lambda **kw: calls.append(("champ", kw)) or [])
    monkeypatch.setattr(data, "load_bfcl", lambda cat, **kw: calls.append((cat, kw)) or [])
    data.load_task("champ", test=0.1)
    data.load_task("bfcl")
    data.load_task("bfcl:parallel")
    assert calls == [("champ", {"test": 0.1}), ("simple", {}), ("parallel", {})]


@pytest.mark.parametrize("spec", ["nonsense", "bigbench", "huggingface:foo"])
def test_unknown_spec(spec):
    with pytest.raises(DistillError, match=f"unknown prompt source '{spec}': use bigbench:<task>"):
        data.load_task(spec)
