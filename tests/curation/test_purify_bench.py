"""The CHAMP purification benchmark on the real recorded API-teacher outputs (slow: ~1 min)."""
import json

import pytest

from distill.cli import main

pytest.importorskip("champ_dataset")


@pytest.mark.slow
def test_champ_purify_bench_prints_every_method_next_to_every_teacher(tmp_path, capsys):
    assert main(["curate", "purify-bench", "champ", "--bench-out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert report in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    held = results["held_out"]
    for row in ("majority", "plackett_luce", "classifier_router", "similarity_router", "bandit",
                "recorded:gpt-4-turbo (vote of its samples)", "recorded:palm-2-medium (0-Shot)"):
        assert row in held and f"| {row} |" in report
    oracle = held.pop("oracle (any sample right)")
    assert all(0.0 <= v <= oracle for v in held.values())
    # Known from the CHAMP paper: GPT-4 Turbo solves far more than PaLM 2 Medium.
    assert held["recorded:gpt-4-turbo (0-Shot)"] > held["recorded:palm-2-medium (0-Shot)"] + 0.2
    # The picks on the held-out split stay in the bench store with their provenance.
    assert main(["report", "--store", str(tmp_path / "champ.duckdb")]) == 0
