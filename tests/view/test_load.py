"""Page loads on a 1,000,000-sample store (tests/view/measure_load.py builds it inside DuckDB); prints the times."""
from __future__ import annotations

import pytest

from tests.view.measure_load import measure, report

LIMIT_S = 5.0  # measured 0.05-0.3 s a page on 2 shared CPU cores; the margin is for a loaded machine


@pytest.mark.slow
def test_pages_load_quickly_on_a_million_samples(tmp_path, capsys):
    result = measure(tmp_path, samples=1_000_000, per_prompt=10)
    with capsys.disabled():
        print("\n" + report(result))
    assert result["samples"] == 1_000_000
    slow = {name: p["again_s"] for name, p in result["pages"].items() if p["again_s"] > LIMIT_S}
    assert not slow, slow


def test_the_measurement_runs_on_a_small_store(tmp_path):
    result = measure(tmp_path, samples=2_000, per_prompt=4)
    assert result["prompts"] == 500 and set(result["pages"]) and all(p["bytes"] > 500 for p in result["pages"].values())
