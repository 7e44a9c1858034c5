"""The cascade report renders every file, every model's row and n/a for anything missing."""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest

from evals.analysis import analyse
from evals.report import write_cascade_report
from evals.results import CascadeResult, Fit, Interval, Resplits, ResplitRun, Row, VersusRandom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = ("cascade.png", "reliability.png", "risk_coverage.png", "slices.png")


def _build(n_per_split: int = 200, n_slices: int = 18, seed: int = 0) -> CascadeResult:
    """A real analyse() result from synthetic predictions: informative student confidence,
    two teachers, priced models and more slices than the plot shows (it keeps the top 15)."""
    rng = np.random.default_rng(seed)
    ids = [f"q{i:04d}" for i in range(2 * n_per_split)]
    splits = ["calibration"] * n_per_split + ["test"] * n_per_split
    slice_of = {pid: f"topic-{min(int(rng.exponential(4)), n_slices - 1):02d}" for pid in ids}

    def model(acc, tokens, latency, conf=None):
        out = []
        for i, (pid, split) in enumerate(zip(ids, splits)):
            ok = bool(rng.random() < acc[i])
            out.append({"prompt_id": pid, "split": split, "answer": "A" if ok else str(rng.choice(["B", "C"])),
                        "correct": ok, "tokens": int(rng.integers(tokens, 2 * tokens)), "latency_s": latency,
                        "features": {"max_prob": 0.9 if conf is None else float(conf[i])}})
        return out

    p = rng.beta(4, 2, len(ids))
    conf = np.clip(p + rng.normal(0, 0.08, len(ids)), 0.01, 0.99)
    preds = {"student": model(p, 50, 0.01, conf),
             "teacher-big": model(np.full(len(ids), 0.9), 300, 0.05),
             "teacher-mid": model(np.full(len(ids), 0.75), 150, 0.03)}
    return analyse(preds, "student", ["teacher-big", "teacher-mid"], target_accuracy=0.8, delta=0.1,
                   prices={"student": 0.1, "teacher-big": 2.0, "teacher-mid": 0.5}, slice_of=slice_of, seed=seed)


@pytest.fixture(scope="module")
def base() -> CascadeResult:
    return _build()


@pytest.fixture
def result(base) -> CascadeResult:
    return copy.deepcopy(base)


def _no_nan(text: str) -> dict:
    def refuse(name):
        raise AssertionError(f"results.json contains {name}")
    return json.loads(text, parse_constant=refuse)


def _assert_files(out):
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    return _no_nan((out / "results.json").read_text())


def test_writes_every_file_and_table(result, tmp_path):
    extra = {"Stage timings": "| stage | seconds |\n|---|---|\n| eval | 1.5 |"}
    path = write_cascade_report(result, tmp_path / "out", "Synthetic task", extra)
    assert path == tmp_path / "out" / "report.md"
    assert _assert_files(tmp_path / "out") == result.to_dict()  # round-trips unchanged
    md = path.read_text()
    assert md.startswith("# Synthetic task\n")
    summary = md.split("\n## ")[0]
    for word in ("`student`", "`teacher-big`", "`max_prob`", "`platt`", "below", "delta = 0.1"):
        assert word in summary
    assert "| model | role | accuracy [95% CI] | teacher calls | tokens/1k | cost/1k USD | latency/1k s |" in md
    for row in result.rows:
        acc = f"{100 * row.accuracy:.1f}% [{100 * row.ci_low:.1f}%, {100 * row.ci_high:.1f}%]"
        assert f"| {row.model} | {row.role} | {acc} | {100 * row.teacher_share:.1f}% |" in md
        assert f"{row.tokens_per_1k:,.0f}" in md
    casc = result.row("cascade")
    assert f"the cascade reaches {100 * casc.accuracy:.1f}%" in summary
    apgr = result.metric_cis["apgr"]
    assert f"| APGR | {apgr.value:.3f} [{apgr.ci_low:.3f}, {apgr.ci_high:.3f}] |" in md
    for key in ("ece", "brier", "auroc"):
        assert f"{getattr(result.confidence_quality['before'], key).value:.3f} [" in md
        assert f"{getattr(result.confidence_quality['after'], key).value:.3f} [" in md
    assert f"{result.aurc:.3f}" in md
    for s in result.slices:
        assert f"| {s.slice} | {s.n} | {100 * s.student:.1f}% |" in md
    for name in (*PNGS, "results.json"):
        assert f"]({name})" in md
    assert md.rstrip().endswith("| eval | 1.5 |") and "## Stage timings" in md
    assert "re-split" not in md and "KD baseline" not in md  # optional sections absent


@pytest.mark.parametrize("low, high, beats", [(0.01, 0.09, True), (0.0, 0.09, False), (-0.01, 0.09, False),
                                              (-0.09, -0.01, False), (None, None, False)])
def test_beats_random_only_when_ci_excludes_zero(result, tmp_path, low, high, beats):
    result.cascade_vs_random = dataclasses.replace(
        result.cascade_vs_random, difference=0.04 if low is None or low >= 0 else -0.04, ci_low=low, ci_high=high)
    md = write_cascade_report(result, tmp_path, "T").read_text()
    assert ("beats random routing" in md) is beats
    if high is not None and high < 0:
        assert "worse than random routing" in md


def test_missing_values_render_as_na(result, tmp_path):
    result.threshold = math.inf  # every query is escalated (results.json stores null)
    result.apgr, result.aurc, result.risk_coverage = None, float("nan"), []
    result.metric_cis["apgr"] = Interval()
    result.metric_cis["cpt_80"].ci_low = None  # a half-missing interval shows the value alone
    result.confidence_quality["after"].ece = Interval()
    result.confidence_quality["after"].bins = []
    result.fidelity.answer_agreement = Interval()
    result.slices[0].teacher = None
    result.rows[0].cost_per_1k_usd, result.rows[0].ci_low = None, None
    result.rows += [Row(model="kd-student", role="kd-baseline", accuracy=0.7, ci_low=0.65, ci_high=0.75,
                        teacher_share=0.0, tokens_per_1k=50000.0, n=200),
                    Row(model="chain a|b", role="chain", accuracy=np.float64(0.8), ci_low=None, ci_high=None,
                        teacher_share=None, n=200, cost_per_1k_usd=math.inf)]
    md = write_cascade_report(result, tmp_path, "Missing").read_text()
    data = _assert_files(tmp_path)
    assert data["aurc"] is None and data["rows"][-1]["cost_per_1k_usd"] is None
    assert "every query is escalated" in md.lower()
    assert "| APGR | n/a |" in md
    cpt80 = result.metric_cis["cpt_80"].value
    assert f"| CPT(80%) | {100 * cpt80:.1f}% |" in md
    assert "| ECE (10 equal-mass bins) | " in md and "| n/a | lower |" in md
    assert "lower is better): n/a." in md  # AURC
    assert "same answer as `teacher-big` on n/a of test items" in md
    s = result.slices[0]
    assert f"| {s.slice} | {s.n} | {100 * s.student:.1f}% | n/a |" in md
    student = result.rows[0]
    assert f"| student | student | {100 * student.accuracy:.1f}% |" in md
    assert "| kd-student | kd-baseline | 70.0% [65.0%, 75.0%] | 0.0% | 50,000 | n/a | n/a |" in md
    assert "| chain a\\|b | chain | 80.0% | n/a | n/a | n/a | n/a |" in md


def test_nearly_empty_result_does_not_crash(tmp_path):
    # The emptiest valid result: required fields at minimal values, everything else at defaults.
    empty = CascadeResult(student="student", cascade_teacher="teacher", threshold=float("nan"), fit=Fit(),
                          n_test=0, rows=[], cascade_vs_random=VersusRandom(), curve=[], apgr=None,
                          cpt_50=None, cpt_80=None)
    md = write_cascade_report(empty, tmp_path, "Empty").read_text()
    _assert_files(tmp_path)
    assert md.startswith("# Empty") and "n/a" in md and "beats random routing" not in md


def test_optional_sections_and_unpriced_models(result, tmp_path):
    result.prices_per_1m_tokens = {}  # no prices: the second panel plots tokens instead of cost
    runs = [ResplitRun("max_prob", 0.82, 0.3, 0.85, reached_on_calibration=i < 18, held=i < 17) for i in range(20)]
    result.resplits = Resplits(target_accuracy=0.8, delta=0.1, signal="max_prob", calibration="platt", n=20, hits=17,
                               rate=0.85, mean_teacher_share=0.3, runs=runs)
    result.kd_baseline = {"description": "Student fine-tuned on the big teacher's soft labels."}
    md = write_cascade_report(result, tmp_path, "Optional").read_text()
    _assert_files(tmp_path)
    assert "held on the other half in 17 of 20 re-splits (85.0%)" in md
    assert "at least 90.0%" in md
    assert "certified on the calibration half in 18 of them" in md  # two fell back: no guarantee there
    assert "## Classic KD baseline" in md and "soft labels" in md
    assert "Prices per 1M tokens: none given" in md
