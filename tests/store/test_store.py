import duckdb
import pytest

from store.store import MIGRATIONS, Store
from core.errors import DistillError


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
    with Store(path) as store:  # reopening applies nothing twice
        assert store.migrate() == []
        assert store.count("schema_migrations") == len(MIGRATIONS)


def test_prompts_round_trip_and_ignore_duplicates(store, rows):
    assert store.add_prompts(rows, "p") == len(rows)
    assert store.add_prompts(rows, "p") == 0
    back = store.prompts("p")
    assert {r.id for r in back} == {r.id for r in rows}
    one = next(r for r in back if r.id == rows[0].id)
    assert one.choices == ["Yes", "No"] and one.rationale == rows[0].rationale
    assert {r.split for r in store.prompts("p", split="test")} == {"test"}


def test_prompts_in_one_batch_keep_the_first_of_a_repeated_id_and_leave_stored_rows_alone(store, rows):
    import dataclasses

    store.add_prompts(rows[:1], "p")
    edited = dataclasses.replace(rows[0], input="changed")
    repeated = dataclasses.replace(rows[1], input="second copy")
    assert store.add_prompts([edited, rows[1], repeated, rows[2]], "p") == 2
    back = {r.id: r for r in store.prompts("p")}
    assert back[rows[0].id].input == rows[0].input and back[rows[1].id].input == rows[1].input
    assert back[rows[2].id].meta == rows[2].meta and back[rows[2].id].gold == rows[2].gold


def test_unwritable_store_path_is_a_clear_error(tmp_path):
    # A regular file where a directory should be: fails even for root, unlike chmod.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(DistillError, match="writable path"):
        Store(blocker / "sub" / "s.duckdb")
    assert blocker.read_text() == "x"


def test_failed_transaction_rolls_back(store, rows):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.con.execute("INSERT INTO runs (id, stage) VALUES ('r1', 'x')")
            raise RuntimeError("boom")
    assert store.count("runs") == 0


def test_runs_record_config_git_and_timings(store):
    run_id = store.start_run("synth", {"teacher": "t"})
    store.finish_run(run_id, "done", {"seconds": 1.5})
    [run] = store.runs("synth")
    assert run["status"] == "done" and '"teacher"' in run["config"] and "1.5" in run["timings"]


def test_store_opens_with_plain_duckdb(tmp_path, rows):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, "p")
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM prompts").fetchone()[0] == len(rows)


def test_finished_run_records_a_summary_of_its_teacher_calls(store, pool):
    import json

    from synth.cot import CotParams, generate_traces
    from tests.doubles import ScriptedTeacher

    run_id = store.start_run("synth", {})
    generate_traces(store, ScriptedTeacher("t", ["Because.\nAnswer: No"]), pool, CotParams(num_samples=2), run_id)
    store.finish_run(run_id)
    summary = json.loads(store.runs("synth")[0]["summary"])
    n = 2 * len(store.prompts(pool, split="train"))
    assert summary["t"]["requests"] == n and summary["t"]["by_status"] == {"done": n}
    assert summary["t"]["completion_tokens"] == 2 * n  # "Because.\nAnswer: No" is two scripted tokens
