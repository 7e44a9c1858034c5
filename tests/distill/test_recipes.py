"""Every kind of teacher signal from both real offline teachers into one store (real path)."""
import os
from pathlib import Path

import duckdb
import pytest

from distill.recipes import DEFAULT_TEACHERS, run_signals_recipe


@pytest.mark.slow
def test_signals_recipe_writes_all_four_kinds_from_both_teachers(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", os.environ.get("DISTILL_CACHE") or str(Path.home() / ".cache" / "distill"))
    result = run_signals_recipe(tmp_path / "signals", limit=2, max_new_tokens=32)
    con = duckdb.connect(str(tmp_path / "signals" / "store.duckdb"), read_only=True)
    by_kind = dict(con.execute("SELECT kind, count(DISTINCT teacher) FROM samples GROUP BY 1").fetchall())
    # 1. chain-of-thought traces and 3. tool trajectories / BFCL calls, from both teachers
    for kind in ("cot", "tool_step", "tool_trajectory", "tool_call"):
        assert by_kind.get(kind) == len(DEFAULT_TEACHERS), (kind, by_kind)
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
