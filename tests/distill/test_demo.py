"""The whole loop on real models (tiny preset), then a re-run that must be all cache hits."""
import json
import os
from pathlib import Path

import duckdb
import pytest

from distill.demo import make_config, run_demo


@pytest.fixture
def real_cache(monkeypatch):
    # The machine-wide cache: models convert and BIG-bench downloads once per machine.
    monkeypatch.setenv("DISTILL_CACHE", os.environ.get("DISTILL_CACHE") or str(Path.home() / ".cache" / "distill"))


@pytest.mark.slow
def test_tiny_demo_end_to_end_then_rerun_reuses_everything(tmp_path, real_cache):
    config = make_config("tiny", overrides=[f"out={tmp_path / 'demo'}"])
    first = run_demo(config)

    report = Path(first["report"])
    text = report.read_text()
    for needle in ["student (", "gemma-3-270m", "smollm2-135m-instruct", "cascade", "random routing",
                   "Stage timings", "cascade.png"]:
        assert needle in text
    assert (report.parent / "cascade.png").stat().st_size > 5000
    rows = {r["role"]: r for r in first["eval"]["rows"]}
    assert {"student", "teacher", "cascade", "random", "oracle"} <= set(rows)
    assert 0.0 <= rows["cascade"]["accuracy"] <= 1.0 and rows["cascade"]["n"] == 5

    con = duckdb.connect(config.store, read_only=True)
    n_samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    joined = con.execute("""SELECT count(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id
                            JOIN requests r ON r.key = s.request_key JOIN runs u ON u.id = s.run_id""").fetchone()[0]
    assert n_samples == joined == 2 * 2 * 6  # teachers x samples x train prompts
    with_template = con.execute("""SELECT count(*) FROM samples s JOIN requests r ON r.key = s.request_key
                                   JOIN templates t ON t.hash = r.template_hash""").fetchone()[0]
    assert with_template == n_samples
    splits = {s for (s,) in con.execute("SELECT DISTINCT p.split FROM samples s JOIN prompts p ON p.id = s.prompt_id").fetchall()}
    assert splits == {"train"}
    n_requests = con.execute("SELECT count(*) FROM requests").fetchone()[0]
    preds = con.execute("SELECT count(*) FROM eval_predictions").fetchone()[0]
    assert preds == 3 * 10  # student + 2 teachers on 5 calibration + 5 test prompts
    con.close()

    exported = [json.loads(x) for x in (Path(config.out) / "sft.jsonl").read_text().splitlines()]
    assert exported and all(m["messages"][1]["content"].startswith("Reasoning:") for m in exported)

    second = run_demo(config)
    assert second["results"]["train"]["cached"] is True
    con = duckdb.connect(config.store, read_only=True)
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == n_requests, "re-run repeated teacher calls"
    con.close()
    assert second["eval"]["rows"] == first["eval"]["rows"]
