"""store.runs.recorded_run: the one way every stage records its run."""
import json

import pytest

from store.runs import recorded_run
from store.store import Store


def _runs(path):
    with Store(path) as store:
        return {r["stage"]: r for r in store.runs()}


def test_done_with_timings_summary_and_no_secrets(tmp_path):
    path = tmp_path / "s.duckdb"
    config = {"teacher": "gemma-3-270m", "api_key": "sk-abcdefghijklmnopqrstuvwx", "nested": {"hf_token": "x"}}
    with recorded_run(path, "synth", config) as run:
        run.add_config(resolved={"batch_size": 4, "password": "p"})
        run.timings["load_s"] = 1.5
        run.summary = {"rows": 3}
    row = _runs(path)["synth"]
    assert row["status"] == "done" and row["finished_at"] is not None
    assert json.loads(row["config"]) == {"teacher": "gemma-3-270m", "nested": {}, "resolved": {"batch_size": 4}}
    timings = json.loads(row["timings"])
    assert timings["load_s"] == 1.5 and timings["wall_s"] >= 0
    assert json.loads(row["summary"]) == {"rows": 3}


def test_a_reused_result_is_cached(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        with recorded_run(store, "train-sft", {}) as run:
            run.summary = {"model_dir": "m", "cached": True}
        assert store.runs()[0]["status"] == "cached"


@pytest.mark.parametrize("error, status", [(ValueError("bad input"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_an_error_marks_the_run_failed_and_is_raised(tmp_path, error, status):
    path = tmp_path / "s.duckdb"
    with pytest.raises(type(error)):
        with recorded_run(path, "curate", {"pool": "p"}):
            raise error
    row = _runs(path)["curate"]
    assert row["status"] == status
    assert json.loads(row["summary"])["error"].startswith(type(error).__name__)


def test_no_store_records_nothing_and_only_the_main_process_writes(tmp_path, monkeypatch):
    with recorded_run(None, "train-sft", {"a": 1}) as run:
        assert run.run_id is None and run.config == {"a": 1}
    monkeypatch.setenv("RANK", "1")
    with recorded_run(tmp_path / "s.duckdb", "train-sft", {}) as run:
        assert run.run_id is None
    assert not (tmp_path / "s.duckdb").exists()


def test_start_run_itself_drops_secrets(store):
    run_id = store.start_run("x", {"api_key": "k", "model": "m"})
    store.finish_run(run_id, config={"token": "t", "model": "m"})
    assert json.loads(store.runs()[0]["config"]) == {"model": "m"}
