"""The notebook API and `distill curate`: stages, DataFrame views, runs recorded, CLI errors."""
import json

import pytest

from curation import Curation
from store.store import Store
from distill.cli import main
from core.errors import DistillError
from synth.cot import CotParams, generate_traces
from tests.doubles import ScriptedTeacher

TRACES = ["Pears are less dense than water, so they float on it.\nAnswer: No",
          "Pears are less dense than water, so they float on it!\nAnswer: No",
          "The sun is a star like the others in the sky.\nAnswer: Yes"]


@pytest.fixture
def traced(store, pool):
    generate_traces(store, ScriptedTeacher("t", TRACES), pool, CotParams(num_samples=3), run_id="r")
    return store


def test_notebook_flow_gives_dataframes_and_records_runs(traced, pool, tmp_path):
    c = Curation(traced, pool)
    c.verify("answer_match", "format")
    c.dedup(threshold=0.8)
    clusters = c.clusters()
    assert len(clusters) and (clusters["size"] > 1).all()
    assert clusters.groupby("cluster_id")["keep"].sum().eq(1).all()  # one kept member per cluster
    verdicts = c.verdicts("answer_match")
    assert set(verdicts["verifier"]) == {"answer_match"} and len(verdicts) == traced.count("samples")
    c.purify("majority")
    assert len(c.purified("majority")) > 0 and len(c.samples()) == traced.count("samples")
    card = c.export("sft", tmp_path / "sft.parquet", method="majority")
    assert card["rows"] == len(c.purified("majority"))
    stages = [r["stage"] for r in traced.runs()]
    assert {"verify", "dedup", "purify", "export"} <= set(stages)


def test_empty_pool_is_a_clear_error(store):
    with pytest.raises(DistillError, match="pool 'nope' is empty"):
        Curation(store, "nope")


def test_cli_curate_exports_parquet_with_a_card(traced, pool, tmp_path, capsys):
    path = traced.path
    traced.close()
    out = tmp_path / "sft.parquet"
    code = main(["curate", "--store", str(path), "--pool", pool, "--method", "majority", "--out", str(out)])
    assert code == 0 and out.exists() and (tmp_path / "sft.card.md").exists()
    result = json.loads(capsys.readouterr().out)
    assert result["export"]["rows"] > 0 and result["dedup"]["samples"] == 3 * len(
        Store(path, read_only=True).query("SELECT DISTINCT prompt_id FROM samples"))


def test_cli_curate_needs_a_pool_and_a_known_method(traced, pool, tmp_path, capsys):
    path = traced.path
    traced.close()
    assert main(["curate", "--store", str(path)]) == 2
    assert "needs --pool" in capsys.readouterr().err
    assert main(["curate", "--store", str(path), "--pool", pool, "--method", "telepathy",
                 "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "unknown purification method" in capsys.readouterr().err
    assert Store(path, read_only=True).count("verdicts") == 0  # nothing ran
