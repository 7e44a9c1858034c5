"""Training entry points record their run in the store: resolved config, checkpoints, loss, status."""
import json
from pathlib import Path

import duckdb
import pytest

from core.errors import DistillError
from core.secrets import public_config


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))


def _runs(store: Path) -> list[dict]:
    """The runs table read with plain duckdb, JSON columns decoded."""
    con = duckdb.connect(str(store), read_only=True)
    cur = con.execute("SELECT * FROM runs ORDER BY started_at")
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, row)) for row in cur.fetchall()]
    con.close()
    for r in rows:
        for col in ("config", "summary", "timings"):
            r[col] = json.loads(r[col]) if r[col] else None
    return rows


def _write_messages(path: Path, n: int = 8) -> Path:
    path.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Is {i} even?"},
        {"role": "assistant", "content": f"Answer: {'Yes' if i % 2 == 0 else 'No'}"}]}) + "\n" for i in range(n)))
    return path


def test_public_config_drops_secrets_only():
    config = {"learning_rate": 1e-3, "max_new_tokens": 8, "hub_token": "abc", "api_key": "x", "pad_token": None,
              "nested": {"OPENAI_API_KEY": "x", "url": "sk-" + "a" * 30, "model": "hf_model"},
              "average_tokens_across_devices": True, "auth": "y", "author": "me"}
    assert public_config(config) == {"learning_rate": 1e-3, "max_new_tokens": 8, "nested": {"model": "hf_model"},
                                     "average_tokens_across_devices": True, "author": "me"}


def test_sft_run_is_recorded_with_config_checkpoints_and_cache(tmp_path, tiny_cache, capsys):
    from train.sft import main

    data, store, out = _write_messages(tmp_path / "sft.jsonl"), tmp_path / "s.duckdb", tmp_path / "student"
    argv = ["--data", str(data), "--student", "tiny-random", "--output", str(out), "--store", str(store),
            "--max-steps", "6", "--batch-size", "4", "--learning-rate", "3e-3", "--max-length", "128"]
    main(argv)
    [run] = _runs(store)
    assert run["stage"] == "train-sft" and run["status"] == "done" and run["finished_at"] is not None
    assert run["config"]["learning_rate"] == 3e-3 and run["config"]["data"] == str(data)
    assert run["config"]["trainer"]["learning_rate"] == 3e-3  # TRL's resolved SFTConfig
    assert "hub_token" not in run["config"]["trainer"]
    summary = run["summary"]
    assert f'"model_dir": "{summary["model_dir"]}"' in capsys.readouterr().out  # what the user saw
    assert summary["last_loss"] > 0 and summary["steps"] == 6 and "losses" not in summary
    assert [Path(p).name for p in summary["checkpoints"][:-1]] == ["checkpoint-6"]  # save_total_limit=1
    assert summary["checkpoints"][-1] == summary["model_dir"]
    assert all(Path(p).is_dir() for p in summary["checkpoints"])
    assert run["timings"]["wall_s"] > 0 and run["timings"]["train_runtime_s"] > 0

    main(argv)  # same data and settings: the cached model, still recorded
    cached = _runs(store)[-1]
    assert cached["status"] == "cached" and cached["summary"]["model_dir"] == summary["model_dir"]


def test_failed_run_is_recorded_and_the_error_raised(tmp_path):
    from train.sft import main

    store = tmp_path / "s.duckdb"
    with pytest.raises(DistillError, match="not found"):
        main(["--data", str(tmp_path / "missing.jsonl"), "--store", str(store), "--output", str(tmp_path / "o")])
    [run] = _runs(store)
    assert run["stage"] == "train-sft" and run["status"] == "failed"
    assert "DistillError" in run["summary"]["error"] and run["finished_at"] is not None


def test_without_store_nothing_is_recorded(tmp_path, tiny_cache):
    from train.prune import main

    main(["--teacher", "tiny-random", "--keep", "0", "--output", str(tmp_path / "p")])
    assert not list(tmp_path.glob("*.duckdb"))


def test_prune_and_teacher_pass_runs_are_recorded(tmp_path, tiny_cache):
    from train.prune import main as prune
    from train.teacher_pass import main as teacher_pass

    store, out = tmp_path / "s.duckdb", tmp_path / "pruned"
    for _ in range(2):
        prune(["--teacher", "tiny-random", "--keep", "0", "--output", str(out), "--store", str(store)])
    first, again = _runs(store)
    assert (first["stage"], first["status"], again["status"]) == ("train-prune", "done", "cached")
    assert first["config"]["keep"] == "0" and first["summary"]["checkpoints"] == [str(out)]

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"{i}?"},
                                                     {"role": "assistant", "content": f"{i}."}],
                                        "sample_id": f"s{i}"}) + "\n" for i in range(3)))
    teacher_pass(["--store", str(store), "--data", str(data), "--teacher", "tiny-random",
                  "--student", "tiny-random", "--k", "4"])
    run = _runs(store)[-1]
    assert (run["stage"], run["status"], run["summary"]["scored"]) == ("train-teacher-pass", "done", 3)
    con = duckdb.connect(str(store), read_only=True)
    assert con.execute("SELECT DISTINCT run_id FROM teacher_logprobs").fetchall() == [(run["id"],)]
    con.close()
