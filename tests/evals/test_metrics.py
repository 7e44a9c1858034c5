"""Metrics on synthetic data with known answers."""

import math

import numpy as np
import pytest

from core.stats import bootstrap_ci
from evals import metrics


def _line(acc_s, acc_t, shares):
    return [{"teacher_share": s, "accuracy": (1 - s) * acc_s + s * acc_t} for s in shares]


def test_bootstrap_ci_contains_point_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = (rng.random(500) < 0.7).astype(float)
    point, low, high = bootstrap_ci(np.mean, x, n=500, seed=1)
    assert point == pytest.approx(x.mean())
    assert low < point < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.7 * 0.3 / 500), rel=0.25)
    assert bootstrap_ci(np.mean, x, n=500, seed=1) == (point, low, high)


def test_bootstrap_resamples_arrays_jointly():
    # a - b is identically 0.5; independent resampling would give a wide interval.
    a = np.linspace(0, 1, 200)
    point, low, high = bootstrap_ci(lambda u, v: float(np.mean(u - v)), a, a - 0.5, n=200)
    assert point == low == high == pytest.approx(0.5)
    with pytest.raises(ValueError):
        bootstrap_ci(np.mean, a, a[:10])


def test_apgr_random_is_half_and_oracle_like_is_higher():
    shares = np.linspace(0, 1, 11)
    assert metrics.apgr(_line(0.6, 0.9, shares), 0.6, 0.9) == pytest.approx(0.5)
    # Oracle-like: the whole gap is recovered after 20% teacher calls.
    oracle = [{"teacher_share": 0.0, "accuracy": 0.6}, {"teacher_share": 0.2, "accuracy": 0.9},
              {"teacher_share": 1.0, "accuracy": 0.9}]
    assert metrics.apgr(oracle, 0.6, 0.9) == pytest.approx(0.9)
    assert metrics.apgr(oracle, 0.6, 0.9) > metrics.apgr(_line(0.6, 0.9, shares), 0.6, 0.9)


def test_apgr_and_cpt_edge_cases():
    flat = _line(0.7, 0.7, [0, 1])
    assert math.isnan(metrics.apgr(flat, 0.7, 0.7))  # no gap to recover
    assert math.isnan(metrics.cpt(flat, 0.7, 0.7))
    assert math.isnan(metrics.apgr(_line(0.8, 0.6, [0, 1]), 0.8, 0.6))  # teacher worse
    with pytest.raises(ValueError):
        metrics.apgr(_line(0.6, 0.9, [0.1, 1]), 0.6, 0.9)  # missing the share-0 end point


def test_cpt_uses_curve_points():
    curve = _line(0.6, 0.9, np.linspace(0, 1, 11))
    assert metrics.cpt(curve, 0.6, 0.9, 0.5) == pytest.approx(0.5)
    assert metrics.cpt(curve, 0.6, 0.9, 0.8) == pytest.approx(0.8)
    dip = [{"teacher_share": 0, "accuracy": 0.6}, {"teacher_share": 1, "accuracy": 0.7}]
    assert math.isnan(metrics.cpt(dip, 0.6, 0.9, 0.5))  # never recovers half the gap


def test_ece_calibrated_vs_overconfident():
    rng = np.random.default_rng(0)
    conf = rng.random(20000)
    calibrated = rng.random(20000) < conf
    assert metrics.ece(conf, calibrated) < 0.02
    over = np.full(20000, 0.95)
    correct = rng.random(20000) < 0.6
    assert metrics.ece(over, correct) == pytest.approx(0.35, abs=0.02)


def test_reliability_bins_are_equal_mass():
    conf = np.r_[np.full(90, 0.99), np.linspace(0, 0.5, 10)]
    bins = metrics.reliability_bins(conf, np.ones(100), bins=10)
    assert [b["count"] for b in bins] == [10] * 10
    assert bins[0]["high"] <= bins[1]["low"]


def test_brier_and_probability_validation():
    assert metrics.brier([1.0, 0.0], [1, 0]) == 0.0
    assert metrics.brier([0.5, 0.5], [1, 0]) == 0.25
    with pytest.raises(ValueError):
        metrics.brier([1.5, 0.2], [1, 0])
    with pytest.raises(ValueError):
        metrics.ece([-0.1, 0.2], [1, 0])


def test_auroc_perfect_reversed_ties_and_single_class():
    correct = np.array([1, 1, 0, 0], bool)
    assert metrics.auroc([0.9, 0.8, 0.2, 0.1], correct) == 1.0
    assert metrics.auroc([0.1, 0.2, 0.8, 0.9], correct) == 0.0
    assert metrics.auroc([0.5, 0.5, 0.5, 0.5], correct) == 0.5
    # One of the four (pos, neg) pairs is tied: (3 + 0.5) / 4.
    assert metrics.auroc([0.9, 0.5, 0.5, 0.1], correct) == pytest.approx(0.875)
    assert metrics.auroc([-3.0, 10.0, -7.0, -8.0], correct) == 1.0  # any scale works
    assert math.isnan(metrics.auroc([0.1, 0.2], [1, 1]))


def _brute_force_curve_gain(s, t, conf):
    """Escalate the j least confident items, j = 0..n; mean over j of cascade minus random."""
    order = np.argsort(conf, kind="stable")
    n = len(s)
    gains = []
    for j in range(n + 1):
        escalated = np.zeros(n, dtype=bool)
        escalated[order[:j]] = True
        acc = np.where(escalated, t, s).mean()
        gains.append(acc - ((1 - j / n) * s.mean() + j / n * t.mean()))
    return float(np.mean(gains))


def test_curve_gain_over_random_equals_the_brute_force_curve():
    rng = np.random.default_rng(3)
    s, t, conf = rng.random(40) < 0.6, rng.random(40) < 0.5, rng.random(40)
    assert metrics.curve_gain_over_random(s, t, conf) == pytest.approx(_brute_force_curve_gain(s, t, conf))


def test_curve_gain_over_random_is_zero_for_a_constant_signal_and_positive_for_an_informative_one():
    rng = np.random.default_rng(4)
    s, t = rng.random(200) < 0.5, rng.random(200) < 0.5
    assert metrics.curve_gain_over_random(s, t, np.full(200, 0.7)) == pytest.approx(0.0, abs=1e-12)
    informative = s + 0.3 * rng.random(200)  # right answers are surer
    assert metrics.curve_gain_over_random(s, t, informative) > 0.1
    assert metrics.curve_gain_over_random(s, t, -informative) < -0.1
