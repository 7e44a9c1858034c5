"""The report renders every file and the numbers a reader needs."""

import json

import numpy as np

from evals.cascade import ModelAnswers, evaluate
from evals.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _split(n, rng):
    p = rng.beta(5, 2, n)
    s_ok = rng.random(n) < p
    student = ModelAnswers("student-small", s_ok, rng.integers(100, 200, n),
                           np.clip(p + rng.normal(0, 0.05, n), 0, 1))
    teachers = [ModelAnswers("teacher-big", rng.random(n) < 0.9, rng.integers(400, 800, n)),
                ModelAnswers("teacher-mid", rng.random(n) < 0.8, rng.integers(200, 400, n))]
    return student, teachers


def _result(**fit):
    rng = np.random.default_rng(0)
    sc, tc = _split(600, rng)
    st, tt = _split(900, rng)
    return evaluate(sc, tc, st, tt, **fit)


def test_report_writes_all_files(tmp_path):
    res = _result(target_accuracy=0.85)
    path = write_report(res, tmp_path / "out", "Test report",
                        {"Stage timings": "| stage | seconds |\n|---|---|\n| eval | 1.5 |"})
    out = tmp_path / "out"
    assert path == out / "report.md"
    for name in ("cascade.png", "reliability.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000
    assert json.loads((out / "results.json").read_text()) == res

    md = path.read_text()
    assert md.startswith("# Test report")
    assert "](cascade.png)" in md and "](reliability.png)" in md
    assert "| model | accuracy [95% CI] | share of teacher calls |" in md
    for row in res["rows"]:
        assert f"| {row['model']} | {100 * row['accuracy']:.1f}% [" in md
        assert f"{row['tokens_per_1k']:,.0f}" in md
    casc = next(r for r in res["rows"] if r["role"] == "cascade")
    assert f"{100 * casc['ci_low']:.1f}, {100 * casc['ci_high']:.1f}]" in md
    assert f"{res['apgr']:.3f}" in md
    assert f"{res['calibration']['ece']:.3f}" in md
    assert f"{res['calibration']['auroc']:.3f}" in md
    assert "Cascade vs random routing" in md
    assert "## Stage timings" in md and "| eval | 1.5 |" in md
    assert "target accuracy 85.0%" in md


def test_report_handles_infinite_threshold_and_missing_metrics(tmp_path):
    # A useless student (always wrong): everything escalates, threshold is +inf.
    n = 50
    conf = np.linspace(0, 1, n)
    s = ModelAnswers("s", np.zeros(n, bool), np.full(n, 10), conf)
    t = ModelAnswers("t", np.ones(n, bool), np.full(n, 100))
    res = evaluate(s, [t], s, [t])
    assert res["threshold"] is None
    md = write_report(res, tmp_path, "Edge").read_text()
    assert "threshold is +inf" in md
    assert "right from wrong answers (0.5 = chance, 1 = perfect): n/a" in md  # one class only
    json.loads((tmp_path / "results.json").read_text())
