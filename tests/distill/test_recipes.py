"""Every kind of teacher signal from both real offline teachers into one store (real path)."""

import duckdb
import pytest

from core.errors import DistillError
from distill.recipes import DEFAULT_TASK, DEFAULT_TEACHERS, main, run_signals_recipe
from prompts.data import catalog, load_task


def test_default_task_is_a_catalog_task_with_human_rationales_and_gold():
    # CoT few-shot exemplars need human rationales from the train split; verification needs gold.
    assert DEFAULT_TASK in catalog() and not DEFAULT_TASK.startswith("bigbench:")
    rows = load_task(DEFAULT_TASK)
    train = [r for r in rows if r.split == "train"]
    assert sum(bool(r.rationale) for r in train) >= 8
    assert all(r.gold for r in rows)


def test_a_bad_task_fails_before_any_store_or_model_call(tmp_path, monkeypatch):
    import clients.models
    import clients.teachers

    monkeypatch.setattr(clients.models, "model_path", lambda name: name)
    monkeypatch.setattr(clients.teachers, "get_teacher", lambda name: pytest.fail("a model was loaded"))
    with pytest.raises(DistillError, match="unknown task 'nope'"):
        run_signals_recipe(tmp_path / "signals", task="nope")
    assert not (tmp_path / "signals").exists()


def test_cli_help_names_the_catalog_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert f"(default: {DEFAULT_TASK})" in out and "bigbench:strategyqa" not in out


@pytest.mark.slow
def test_signals_recipe_writes_all_four_kinds_from_both_teachers(tmp_path, machine_cache):
    result = run_signals_recipe(tmp_path / "signals", limit=2, max_new_tokens=24)
    con = duckdb.connect(str(tmp_path / "signals" / "store.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM prompts WHERE pool = ?", [DEFAULT_TASK]).fetchone()[0]
    by_kind = dict(con.execute("SELECT kind, count(DISTINCT teacher) FROM samples GROUP BY 1").fetchall())
    # 1. chain-of-thought traces and 3. tool trajectories / BFCL calls, from both teachers
    for kind in ("cot", "tool_step", "tool_trajectory", "tool_call"):
        assert by_kind.get(kind) == len(DEFAULT_TEACHERS), (kind, by_kind)
    # every CoT trace was checked against the human gold answer
    assert con.execute("""SELECT count(*) FROM samples s LEFT JOIN verdicts v
                          ON v.sample_id = s.id AND v.verifier = 'answer_match'
                          WHERE s.kind = 'cot' AND v.sample_id IS NULL""").fetchone()[0] == 0
    # 2. critiques, revisions and judge scores
    assert by_kind.get("critique") and by_kind.get("revision")
    assert con.execute("SELECT count(*) FROM verdicts WHERE verifier LIKE 'judge:%'").fetchone()[0] > 0
    # 4. preference pairs (PLaD teacher-vs-student needs no labels, so it always has rows here)
    assert con.execute("SELECT count(*) FROM pairs WHERE strategy = 'teacher_vs_student'").fetchone()[0] > 0
    # every sample joins to its prompt, request and run
    n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    joined = con.execute("""SELECT count(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id
                            JOIN requests r ON r.key = s.request_key JOIN runs u ON u.id = s.run_id""").fetchone()[0]
    assert n == joined
    assert result["expand"]["requested"] == 2
