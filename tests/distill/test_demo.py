"""The whole loop on real models (tiny preset), then a re-run that must be all cache hits."""
import json
from pathlib import Path

import duckdb
import pytest

from distill.demo import make_config, run_demo



def test_presets_and_overrides():
    config = make_config("fast", overrides=["eval_prompts=20", "committee=false", "teachers=a,b"])
    assert config.eval_prompts == 20 and config.committee is False and config.teachers == ["a", "b"]
    assert config.store.endswith("store.duckdb") and config.task == make_config().task


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_rerun_reuses_everything(tmp_path, machine_cache):
    config = make_config("tiny", overrides=[f"out={tmp_path / 'demo'}"])
    first = run_demo(config)

    report = Path(first["report"])
    text = report.read_text()
    for needle in ["gemma-3-270m", "smollm2-135m-instruct", "committee(", "random", "student before",
                   "curation funnel", "traces generated", "near duplicates removed", "picked by purification",
                   "before distillation", "teacher calls per 1,000 queries", "stage timings", "cascade.png"]:
        assert needle in text, needle
    assert (report.parent / "cascade.png").stat().st_size > 5000
    rows = {r.role: r for r in first["eval"].rows}
    assert {"student", "student before", "teacher", "cascade", "random", "oracle"} <= set(rows)
    assert rows["cascade"].n == rows["student before"].n == 10
    cvr = first["eval"].cascade_vs_random
    assert cvr.ci_low <= cvr.difference <= cvr.ci_high

    con = duckdb.connect(config.store, read_only=True)
    n_cot = con.execute("SELECT count(*) FROM samples WHERE kind = 'cot'").fetchone()[0]
    joined = con.execute("""SELECT count(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id
                            JOIN requests r ON r.key = s.request_key JOIN runs u ON u.id = s.run_id
                            WHERE s.kind = 'cot'""").fetchone()[0]
    assert n_cot == joined == 2 * 2 * 2  # teachers x samples x trace prompts
    splits = {s for (s,) in con.execute("SELECT DISTINCT p.split FROM samples s JOIN prompts p ON p.id = s.prompt_id")
              .fetchall()}
    assert splits == {"train"}
    # Teacher answers for the training set come from train rows only; nothing of test is trained on.
    trained_ids = {json.loads(x)["prompt_id"] for x in (Path(config.out) / "sft.jsonl").read_text().splitlines()}
    test_ids = {i for (i,) in con.execute("SELECT id FROM prompts WHERE split <> 'train'").fetchall()}
    assert trained_ids and not trained_ids & test_ids
    n_requests = con.execute("SELECT count(*) FROM requests").fetchone()[0]
    con.close()
    funnel = first["results"]["funnel"]
    assert sum(f["generated"] for f in funnel) == n_cot
    assert all(f["verified"] <= f["generated"] and f["picked"] <= f["verified"] for f in funnel)
    exported = [json.loads(x) for x in (Path(config.out) / "sft.jsonl").read_text().splitlines()]
    assert all(set(r) >= {"prompt", "completion", "prompt_id", "teacher"} for r in exported)

    second = run_demo(config)
    assert second["results"]["train"]["cached"] is True
    con = duckdb.connect(config.store, read_only=True)
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == n_requests, "re-run repeated model calls"
    con.close()
    assert second["eval"].rows == first["eval"].rows
