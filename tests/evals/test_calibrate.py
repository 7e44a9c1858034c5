"""Calibrators and threshold choice (evals/calibrate.py) on synthetic data with a known truth."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from evals import metrics
from evals.calibrate import (
    METHODS,
    Calibrator,
    choose_threshold,
    fit_calibrator,
    ltt_p_value,
)
from evals.cascade import ModelAnswers, cascade_curve

FITTED = ("temperature", "platt", "isotonic")


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw confidence like a top-option probability (in [0.5, 1)); the truth is P(correct) = raw**2."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0.5, 0.999, n)
    return raw, (rng.random(n) < raw**2).astype(float)


@pytest.fixture(scope="module")
def data():
    return overconfident(3000, seed=1), overconfident(3000, seed=2)


@pytest.mark.parametrize("method", FITTED)
def test_calibration_lowers_held_out_nll_and_ece(data, method):
    (raw_c, y_c), (raw_t, y_t) = data
    cal = fit_calibrator(method, raw_c, y_c)
    assert cal.method == method
    none = fit_calibrator("none", raw_c, y_c)
    p_none, p_cal = none.apply(raw_t), cal.apply(raw_t)
    np.testing.assert_array_equal(p_none, raw_t)  # "none" is the identity on [0, 1]
    assert _nll(p_cal, y_t) < _nll(p_none, y_t) - 0.01
    assert metrics.ece(p_cal, y_t) < metrics.ece(p_none, y_t) - 0.03
    assert p_cal.mean() < p_none.mean()  # over-confidence is pulled down
    if method != "temperature":  # one scale and no bias cannot reach raw**2; the others can
        assert metrics.ece(p_cal, y_t) < 0.05
        # Mean predicted probability now tracks the accuracy.
        assert abs(p_cal.mean() - y_t.mean()) < 0.03 < abs(p_none.mean() - y_t.mean())


def test_temperature_above_one_for_overconfidence(data):
    (raw_c, y_c), _ = data
    cal = fit_calibrator("temperature", raw_c, y_c)
    assert cal.params["temperature"] > 1.2
    x = np.array([0.6, 0.8, 0.95])
    logit = np.log(x / (1 - x))
    np.testing.assert_allclose(cal.apply(x), 1 / (1 + np.exp(-logit / cal.params["temperature"])))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("informative", [True, False])
def test_every_calibrator_is_monotone(method, informative):
    """Routing order never changes, even when the raw score is anti-informative (platt keeps a > 0)."""
    rng = np.random.default_rng(3)
    raw = rng.random(400)
    p_true = raw if informative else 1 - raw
    y = rng.random(400) < p_true
    cal = fit_calibrator(method, raw, y)
    grid = np.r_[0.0, np.sort(rng.random(2000)), np.linspace(0, 1, 1001), 1.0]
    grid.sort()
    out = cal.apply(grid)
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out) >= -1e-12)
    if method == "platt":
        assert cal.params["a"] > 0


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_gives_identical_outputs(data, method):
    (raw_c, y_c), (raw_t, _) = data
    cal = fit_calibrator(method, raw_c, y_c)
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.method == cal.method
    np.testing.assert_array_equal(back.apply(raw_t), cal.apply(raw_t))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label", [0, 1])
def test_one_class_input_keeps_the_raw_score(method, label):
    cal = fit_calibrator(method, [0.2, 0.5, 0.9], [label] * 3)
    assert cal.method == "none" and cal.params == {}
    np.testing.assert_array_equal(cal.apply([0.2, 0.5, 0.9]), [0.2, 0.5, 0.9])


def test_unknown_method_names_the_methods():
    with pytest.raises(ValueError, match="none, temperature, platt, isotonic"):
        fit_calibrator("beta", [0.2, 0.8], [0, 1])
    with pytest.raises(ValueError, match="unknown calibration method 'beta'.*isotonic"):
        Calibrator("beta").apply([0.5])


@pytest.mark.parametrize("raw, y", [([0.1, 0.2], [1]), ([], [])])
def test_shape_mismatch_or_empty_raises(raw, y):
    with pytest.raises(ValueError, match="one confidence per labelled item"):
        fit_calibrator("platt", raw, y)


def test_isotonic_is_a_step_function_fitted_to_the_frequencies():
    raw = [0.1, 0.1, 0.2, 0.2, 0.8, 0.8, 0.9, 0.9]
    y = [0, 0, 1, 0, 1, 1, 1, 1]
    cal = fit_calibrator("isotonic", raw, y)
    np.testing.assert_allclose(cal.apply([0.1, 0.2, 0.8, 0.9]), [0.0, 0.5, 1.0, 1.0])
    # Beyond the fitted range the end values hold (clip), never outside [0, 1].
    np.testing.assert_allclose(cal.apply([0.0, 1.0]), [0.0, 1.0])


def test_none_clips_to_unit_interval():
    np.testing.assert_array_equal(Calibrator().apply([-0.5, 0.3, 1.7]), [0.0, 0.3, 1.0])


# --- ltt_p_value ----------------------------------------------------------------------


def test_ltt_p_value_by_hand():
    # 9 of 10 right, target 0.8: P(at most 1 error | error rate 0.2) = 0.8^10 + 10 * 0.2 * 0.8^9.
    by_hand = sum(math.comb(10, k) * 0.2**k * 0.8 ** (10 - k) for k in range(2))
    assert ltt_p_value(9, 10, 0.8) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(0.8**10 + 2 * 0.8**9)
    assert ltt_p_value(9, 10, 0.8) == pytest.approx(stats.binom.cdf(1, 10, 0.2))
    assert ltt_p_value(37, 40, 0.75) == pytest.approx(stats.binom.cdf(3, 40, 0.25))
    assert ltt_p_value(0, 0, 0.9) == 1.0


def test_ltt_p_value_is_smaller_with_more_evidence():
    ps = [ltt_p_value(k, 50, 0.8) for k in range(51)]
    assert np.all(np.diff(ps) <= 0) and ps[-1] < 1e-4 and ps[0] == pytest.approx(1.0)
    # Same accuracy, more items: stronger evidence.
    assert ltt_p_value(90, 100, 0.8) < ltt_p_value(18, 20, 0.8)


# --- choose_threshold -----------------------------------------------------------------

# A hand-made calibration curve (n = 100), sorted by teacher share; cost grows with the share.
CURVE = [
    {"threshold": -math.inf, "teacher_share": 0.0, "accuracy": 0.60, "cost_per_1k": 1.0},
    {"threshold": 0.2, "teacher_share": 0.2, "accuracy": 0.72, "cost_per_1k": 3.0},
    {"threshold": 0.4, "teacher_share": 0.4, "accuracy": 0.82, "cost_per_1k": 5.0},
    {"threshold": 0.5, "teacher_share": 0.5, "accuracy": 0.86, "cost_per_1k": 6.0},
    {"threshold": 0.6, "teacher_share": 0.6, "accuracy": 0.90, "cost_per_1k": 7.0},
    {"threshold": 0.8, "teacher_share": 0.8, "accuracy": 0.93, "cost_per_1k": 9.0},
    {"threshold": math.inf, "teacher_share": 1.0, "accuracy": 0.92, "cost_per_1k": 11.0},
]


def test_no_goal_picks_the_most_accurate_point():
    out = choose_threshold(CURVE, 100)
    assert out["threshold"] == 0.8 and out["reached"] is None


@pytest.mark.parametrize("target, share", [(0.6, 0.0), (0.7, 0.2), (0.82, 0.4), (0.85, 0.5), (0.9, 0.6), (0.93, 0.8)])
def test_target_is_met_with_the_lowest_teacher_share(target, share):
    out = choose_threshold(CURVE, 100, target_accuracy=target)
    assert out["reached"] is True and out["teacher_share"] == share and out["accuracy"] >= target
    assert all(p["accuracy"] < target for p in CURVE if p["teacher_share"] < share)


def test_unreachable_target_gives_the_most_accurate_point():
    out = choose_threshold(CURVE, 100, target_accuracy=0.95)
    assert out["reached"] is False and out["accuracy"] == 0.93 and out["teacher_share"] == 0.8
    out = choose_threshold(CURVE, 100, target_accuracy=0.95, delta=0.1)
    assert out["reached"] is False and out["accuracy"] == 0.93


@pytest.mark.parametrize("budget", [0.0, 0.1, 0.45, 0.5, 0.7, 1.0])
def test_teacher_share_budget_is_respected(budget):
    out = choose_threshold(CURVE, 100, max_teacher_share=budget)
    within = [p for p in CURVE if p["teacher_share"] <= budget]
    assert out["teacher_share"] <= budget
    assert out["accuracy"] == max(p["accuracy"] for p in within)
    # With a target out of reach inside the budget: the best point within it, reached False.
    out = choose_threshold(CURVE, 100, target_accuracy=0.93, max_teacher_share=budget)
    assert out["teacher_share"] <= budget and out["reached"] is (budget >= 0.8)


@pytest.mark.parametrize("budget", [1.0, 2.5, 5.0, 6.5, 9.0, 100.0])
def test_cost_budget_is_respected(budget):
    out = choose_threshold(CURVE, 100, max_cost_per_1k=budget)
    assert out["cost_per_1k"] <= budget
    assert out["accuracy"] == max(p["accuracy"] for p in CURVE if p["cost_per_1k"] <= budget)
    out = choose_threshold(CURVE, 100, target_accuracy=0.8, max_cost_per_1k=budget)
    assert out["cost_per_1k"] <= budget and out["reached"] is (budget >= 5.0)


def test_cost_budget_below_everything_falls_back_to_the_cheapest_point():
    out = choose_threshold(CURVE, 100, max_cost_per_1k=0.5)
    assert out["teacher_share"] == 0.0 and out["cost_per_1k"] == 1.0


@pytest.mark.parametrize("target", [0.75, 0.8, 0.85, 0.88])
@pytest.mark.parametrize("delta", [0.05, 0.1, 0.2])
def test_delta_is_at_least_as_conservative_and_its_p_value_is_below_delta(target, delta):
    n = 100
    plain = choose_threshold(CURVE, n, target_accuracy=target)
    ltt = choose_threshold(CURVE, n, target_accuracy=target, delta=delta)
    assert ltt["teacher_share"] >= plain["teacher_share"]
    if ltt["reached"]:
        assert ltt_p_value(round(ltt["accuracy"] * n), n, target) <= delta
        # Every point from the all-teacher end down to the chosen one was tested and passed.
        for p in CURVE:
            if p["teacher_share"] >= ltt["teacher_share"]:
                assert ltt_p_value(round(p["accuracy"] * n), n, target) <= delta


def test_delta_strictly_more_conservative_on_a_known_case():
    # From the all-teacher end against 0.85 at n = 100: 92, 93 and 90 correct pass at delta 0.1
    # (p = 0.027, 0.012, 0.0994); 86 correct does not (p = 0.457), so the walk stops at share 0.6.
    plain = choose_threshold(CURVE, 100, target_accuracy=0.85)
    ltt = choose_threshold(CURVE, 100, target_accuracy=0.85, delta=0.1)
    assert plain["teacher_share"] == 0.5 and plain["reached"] is True
    assert ltt["teacher_share"] == 0.6 and ltt["reached"] is True and ltt["threshold"] == 0.6
    assert ltt_p_value(90, 100, 0.85) <= 0.1 < ltt_p_value(86, 100, 0.85)
    # At delta 0.05 the 0.90 point fails too: only the two top points are certified.
    assert choose_threshold(CURVE, 100, target_accuracy=0.85, delta=0.05)["teacher_share"] == 0.8
    # With fewer calibration items the same accuracies prove less.
    assert choose_threshold(CURVE, 20, target_accuracy=0.85, delta=0.1)["reached"] is False


def test_delta_walk_stops_at_the_first_failure():
    """Fixed-sequence testing: a later (cheaper) point that would pass is not reached past a failure."""
    curve = [
        {"threshold": -math.inf, "teacher_share": 0.0, "accuracy": 0.99, "cost_per_1k": 0.0},
        {"threshold": 0.5, "teacher_share": 0.5, "accuracy": 0.70, "cost_per_1k": 1.0},
        {"threshold": math.inf, "teacher_share": 1.0, "accuracy": 0.99, "cost_per_1k": 2.0},
    ]
    out = choose_threshold(curve, 200, target_accuracy=0.9, delta=0.1)
    assert out["reached"] is True and out["teacher_share"] == 1.0
    assert choose_threshold(curve, 200, target_accuracy=0.9)["teacher_share"] == 0.0


@pytest.mark.parametrize("kw, match", [
    ({"target_accuracy": 1.2}, "target_accuracy"),
    ({"max_teacher_share": -0.1}, "max_teacher_share"),
    ({"target_accuracy": 0.8, "delta": 1.5}, "delta"),
    ({"delta": 0.1}, "needs a target accuracy"),
])
def test_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        choose_threshold(CURVE, 100, **kw)


# --- Learn-then-Test: does the guarantee hold on new data? ---------------------------

TARGET, TEACHER_ACC = 0.85, 0.95


def population_accuracy(threshold: float) -> float:
    """Confidence c ~ U(0, 1), student right w.p. c, teacher right w.p. 0.95 (independent).

    The cascade answers with the student when c >= t: accuracy(t) = 0.95 t + (1 - t^2) / 2,
    which meets 0.85 exactly when t >= 0.5."""
    t = min(1.0, max(0.0, threshold))
    return TEACHER_ACC * t + (1 - t * t) / 2


def draw_calibration(n: int, rng) -> tuple[list[dict], int]:
    conf = rng.random(n)
    s = ModelAnswers("s", rng.random(n) < conf, np.full(n, 10), conf)
    t = ModelAnswers("t", rng.random(n) < TEACHER_ACC, np.full(n, 100))
    return [dict(p, cost_per_1k=p["tokens"] * 1000 / n) for p in cascade_curve(s, t)], n


def hold_rate(delta: float | None, draws: int = 200, n: int = 200, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    held = 0
    for _ in range(draws):
        curve, n = draw_calibration(n, rng)
        chosen = choose_threshold(curve, n, target_accuracy=TARGET, delta=delta)
        held += population_accuracy(chosen["threshold"]) >= TARGET
    return held / draws


def test_population_accuracy_is_right():
    assert population_accuracy(0.5) == pytest.approx(TARGET)
    assert population_accuracy(0.49) < TARGET < population_accuracy(0.51)
    # Check the closed form against a large simulated cascade at t = 0.3.
    rng = np.random.default_rng(9)
    c = rng.random(400_000)
    ok = np.where(c >= 0.3, rng.random(c.size) < c, rng.random(c.size) < TEACHER_ACC)
    assert ok.mean() == pytest.approx(population_accuracy(0.3), abs=3e-3)


def test_learn_then_test_guarantee_holds_on_new_data():
    with_delta = hold_rate(0.1)
    without = hold_rate(None)
    assert with_delta >= 0.85
    assert without <= 0.7 and with_delta - without >= 0.25


def test_reached_means_the_target_held_on_calibration_whatever_delta():
    curve = [{"threshold": -math.inf, "teacher_share": 0.0, "accuracy": 0.86, "cost_per_1k": 0.0},
             {"threshold": math.inf, "teacher_share": 1.0, "accuracy": 0.99, "cost_per_1k": 1.0}]
    out = choose_threshold(curve, 100, target_accuracy=0.87, delta=0.7)
    assert not (out["reached"] and out["accuracy"] < 0.87)


def test_ltt_walks_from_the_student_end_when_the_teacher_is_weaker():
    """A teacher worse than the student makes accuracy fall with the teacher share: the fixed
    sequence must start at all-student, or nothing would ever be certified."""
    curve = [{"threshold": t, "teacher_share": s, "accuracy": a, "cost_per_1k": s}
             for t, s, a in ((-1.0, 0.0, 0.85), (0.5, 0.5, 0.7), (2.0, 1.0, 0.5))]
    chosen = choose_threshold(curve, 200, target_accuracy=0.75, delta=0.1)
    assert chosen["reached"] is True and chosen["teacher_share"] == 0.0
    # The usual direction still holds when the teacher is the better model.
    flipped = [dict(p, accuracy=a) for p, a in zip(curve, (0.5, 0.7, 0.85))]
    chosen = choose_threshold(flipped, 200, target_accuracy=0.75, delta=0.1)
    assert chosen["reached"] is True and chosen["teacher_share"] == 1.0


def test_batch_safe_target_leaves_room_for_the_batch_noise():
    from scipy import stats

    from evals.calibrate import batch_safe_target

    bar = batch_safe_target(0.85, 200, 0.05)
    need = math.ceil(0.85 * 200)
    assert 0.85 < bar < 0.95
    assert stats.binom.cdf(need - 1, 200, bar) == pytest.approx(0.05, abs=1e-6)
    assert batch_safe_target(0.85, 20_000, 0.05) < bar  # bigger batches need less room
    assert batch_safe_target(0.0, 50, 0.05) == 0.0


def test_batch_guarantee_holds_on_finite_test_batches():
    """With batch_size the target holds on the BATCH's own accuracy in >= 1 - delta of draws;
    the population guarantee alone does not (a certified point just above the target scatters
    below it on a finite batch)."""
    rng = np.random.default_rng(5)
    held = {"population": 0, "batch": 0}
    draws, n, batch = 150, 400, 400
    for _ in range(draws):
        curve, _ = draw_calibration(n, rng)
        for kind in held:
            chosen = choose_threshold(curve, n, target_accuracy=TARGET, delta=0.1,
                                      batch_size=batch if kind == "batch" else None)
            c = rng.random(batch)
            t = chosen["threshold"]
            ok = np.where(c >= t, rng.random(batch) < c, rng.random(batch) < TEACHER_ACC)
            held[kind] += ok.mean() >= TARGET
    assert held["batch"] / draws >= 0.9
    assert held["batch"] > held["population"]
