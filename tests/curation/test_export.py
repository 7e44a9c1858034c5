"""Exports join back to their source samples; contaminated rows are refused unless forced."""
import json

import duckdb
import pytest

from curation import Curation
from curation.decontam import decontaminate
from core.errors import DistillError
from prompts.rows import PromptRow, stable_id
from synth.cot import CotParams, generate_traces
from curation.pairs import build_pairs
from tests.doubles import ScriptedTeacher

HELD_OUT = ("In which year did the first steam locomotive carry paying passengers between two "
            "English towns on a public railway line")


@pytest.fixture
def curated(store, pool):
    teacher = ScriptedTeacher("teacher", ["Because of density.\nAnswer: No", "It just is.\nAnswer: Yes"])
    generate_traces(store, teacher, pool, CotParams(num_samples=2), run_id="r1")
    c = Curation(store, pool)
    c.verify()
    c.dedup()
    c.purify("verified_first")
    return c


def _join_count(store, path, column, table="samples"):
    store.con.execute(f"CREATE OR REPLACE TEMP VIEW e AS SELECT * FROM read_parquet('{path}')")
    return store.query(f"SELECT count(*) AS n FROM e JOIN {table} t ON t.id = e.{column}")[0]["n"]


def test_every_export_kind_joins_back_through_lineage_columns(curated, tmp_path):
    store = curated.store
    build_pairs(store, curated.pool, "rp", strategy="verified")
    for kind, columns in [("sft", ["sample_id"]), ("dpo", ["chosen_sample_id", "rejected_sample_id"]),
                          ("prompt", ["prompt_id"])]:
        path = tmp_path / f"{kind}.parquet"
        card = curated.export(kind, path)
        assert card["rows"] > 0 and (tmp_path / f"{kind}.card.md").exists()
        for col in columns:
            table = "prompts" if col == "prompt_id" else "samples"
            assert _join_count(store, path, col, table) == card["rows"]
        recorded = json.loads(store.query("SELECT card FROM exports WHERE id = ?", [card["export_id"]])[0]["card"])
        assert recorded["rows"] == card["rows"] and recorded["per_teacher"]
    assert store.count("exports") == 3


def test_sft_without_reasoning_and_as_a_dataset(curated, tmp_path):
    curated.export("sft", tmp_path / "concise.jsonl", reasoning=False)
    line = json.loads((tmp_path / "concise.jsonl").read_text().splitlines()[0])
    assert line["messages"][1]["content"].startswith("Answer: ")
    assert "final answer only" in line["messages"][0]["content"]
    ds = curated.dataset("sft")
    assert {"messages", "sample_id", "prompt_id", "teacher"} <= set(ds.column_names) and len(ds) > 0


def test_contaminated_rows_are_refused_unless_forced(store, pool, tmp_path):
    rid = stable_id("test", HELD_OUT)
    store.add_prompts([PromptRow(id=rid, source="test", task="yesno", input=HELD_OUT + "?", gold="1825",
                                 split="test")], "eval-pool")
    leaky = ScriptedTeacher("leaky", [f"I remember: {HELD_OUT.lower()} was 1825.\nAnswer: No"])
    clean = ScriptedTeacher("clean", ["Because of density.\nAnswer: Yes"])
    generate_traces(store, clean, pool, CotParams(num_samples=1), run_id="r1")
    generate_traces(store, leaky, pool, CotParams(num_samples=1), run_id="r2")
    c = Curation(store, pool)
    c.verify()
    c.purify()  # verified first: the leaky trace is picked wherever the gold answer is No
    check = decontaminate(store, pool, "rd")
    assert check["contaminated"] == store.count("samples", "teacher = 'leaky'") > 0
    assert store.count("samples", "teacher = 'clean'") > 0
    assert store.count("verdicts", "verifier = 'decontam' AND NOT passed") == check["contaminated"]
    leaked = store.query("SELECT count(*) AS n FROM purified u JOIN samples s ON s.id = u.sample_id "
                         "WHERE u.method = 'verified_first' AND s.teacher = 'leaky'")[0]["n"]
    assert leaked > 0
    path = tmp_path / "sft.jsonl"
    with pytest.raises(DistillError, match="overlap a held-out split"):
        c.export("sft", path)
    assert not path.exists()
    card = c.export("sft", path, drop_contaminated=True)
    assert card["decontam"]["dropped"] == leaked and card["rows"] > 0
    assert "leaky" not in card["per_teacher"]
    forced = c.export("sft", tmp_path / "forced.jsonl", force=True)
    assert forced["decontam"]["forced"] and forced["rows"] == card["rows"] + leaked


def test_export_refuses_bad_paths_and_kinds(curated, tmp_path):
    with pytest.raises(DistillError, match=".jsonl or .parquet"):
        curated.export("sft", tmp_path / "x.csv")
    with pytest.raises(DistillError, match="unknown export kind"):
        curated.export("rlhf", tmp_path / "x.jsonl")


def test_parquet_is_readable_by_plain_duckdb(curated, tmp_path):
    path = tmp_path / "sft.parquet"
    curated.export("sft", path)
    rows = duckdb.sql(f"SELECT messages, sample_id FROM read_parquet('{path}')").fetchall()
    assert rows and rows[0][0][0]["role"] == "user"


def test_tools_export_keeps_verified_trajectories_in_trl_tool_format(store, tmp_path):
    from synth.react import generate_trajectories

    problems = [("Gus has 22 shells and gives away 11. How many shells are left?", "11"),
                ("Ben has 4 stickers and gets 7 more. How many stickers does Ben have now?", "11"),
                ("Ada has 9 pens and buys 4 more. How many pens does Ada have now?", "13")]
    store.add_prompts([PromptRow(id=stable_id("arith", q), source="test", task="arith", input=q, gold=g, split="train")
                       for q, g in problems], "arith")
    teacher = ScriptedTeacher("scripted", [" I need 22 minus 11.\nAction: calculator[22 - 11]",
                                           " The calculator says 11.\nFinal Answer: 11"])
    generate_trajectories(store, teacher, "arith", "r")  # always ends with 11: wrong for Ada
    c = Curation(store, "arith")
    c.verify()
    path = tmp_path / "tools.parquet"
    card = c.export("tools", path)
    assert card["rows"] == 2 and _join_count(store, path, "sample_id") == 2
    rows = duckdb.sql(f"SELECT messages, tools FROM read_parquet('{path}')").fetchall()
    roles = [[m["role"] for m in r[0]] for r in rows]
    assert all(r[0] == "user" and r[-1] == "assistant" for r in roles) and any("tool" in r for r in roles)
    assert {t["function"]["name"] for t in rows[0][1]} >= {"calculator"}
