"""Confidence signals (evals/signals.py) on hand-made option log-probs and synthetic features."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals import metrics
from evals.signals import (
    FEATURES,
    GENERATION_SIGNALS,
    SIGNALS,
    LearnedDeferral,
    agreement,
    choice_features,
    feature_matrix,
    fit_learned,
    signal_values,
    token_features,
)


def softmax(x):
    e = np.exp(np.asarray(x, float) - max(x))
    return e / e.sum()


# --- token and choice features --------------------------------------------------------


def test_token_features_by_hand():
    lps = [-0.1, -0.2, -0.3, -2.0]
    out = token_features(lps, [2.0, 1.0, 0.5, 0.5])
    assert out["seq_prob"] == pytest.approx(math.exp(-2.6 / 4))
    # 10th percentile of [-2.0, -0.3, -0.2, -0.1] by linear interpolation: -2.0 + 0.3 * 1.7.
    assert out["token_q10"] == pytest.approx(math.exp(-2.0 + 0.3 * 1.7))
    assert out["token_margin"] == pytest.approx(1 - math.exp(-1.0))
    # One unsure token pulls q10 far below the length-normalised mean.
    assert out["token_q10"] < out["seq_prob"]


def test_token_features_edge_cases():
    assert token_features([], []) == {"seq_prob": 0.0, "token_q10": 0.0, "token_margin": 0.0}
    out = token_features([-0.5], [])
    assert out["seq_prob"] == out["token_q10"] == pytest.approx(math.exp(-0.5)) and out["token_margin"] == 0.0
    assert token_features([0.0, 0.0], [50.0, 50.0]) == {"seq_prob": 1.0, "token_q10": 1.0, "token_margin": 1.0}


def test_choice_features_by_hand():
    details = [
        {"token_logprobs": [-1.0, -1.5], "top2_margins": [0.2, 0.4]},  # sum -2.5
        {"token_logprobs": [-0.1, -0.2], "top2_margins": [2.0, 1.0]},  # sum -0.3: the answer
        {"token_logprobs": [-3.0]},                                     # sum -3.0, no margins
    ]
    out = choice_features(details)
    probs = softmax([-2.5, -0.3, -3.0])
    assert out["answer_index"] == 1
    np.testing.assert_allclose(out["probs"], probs)
    assert out["max_prob"] == pytest.approx(probs[1])
    assert out["margin"] == pytest.approx(probs[1] - probs[0])
    entropy = -(probs * np.log(probs)).sum()
    assert out["entropy"] == pytest.approx(1 - entropy / math.log(3))
    # Token signals come from the chosen option's own tokens.
    assert out["seq_prob"] == pytest.approx(math.exp(-0.15))
    assert out["token_q10"] == pytest.approx(math.exp(-0.2 + 0.1 * 0.1))
    assert out["token_margin"] == pytest.approx(1 - math.exp(-1.5))


def test_choice_features_sum_not_mean_picks_the_answer():
    # Option 0 has the better mean per token, option 1 the better sum: the sum decides (lm-eval style).
    out = choice_features([{"token_logprobs": [-0.4, -0.4, -0.4]}, {"token_logprobs": [-1.0]}])
    assert out["answer_index"] == 1 and out["seq_prob"] == pytest.approx(math.exp(-1.0))


def test_uniform_single_and_tied_options():
    uniform = choice_features([{"token_logprobs": [-1.0]}] * 4)
    assert uniform["answer_index"] == 0  # ties: the first option
    assert uniform["max_prob"] == pytest.approx(0.25) and uniform["margin"] == pytest.approx(0.0)
    assert uniform["entropy"] == pytest.approx(0.0, abs=1e-12)
    single = choice_features([{"token_logprobs": [-2.0]}])
    assert single["max_prob"] == 1.0 and single["margin"] == 1.0 and single["entropy"] == 1.0
    certain = choice_features([{"token_logprobs": [0.0]}, {"token_logprobs": [-200.0]}])
    assert certain["entropy"] == pytest.approx(1.0) and certain["margin"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one option"):
        choice_features([])


def test_signals_stay_in_unit_interval():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(2, 7))
        details = [{"token_logprobs": (-rng.exponential(2, int(rng.integers(1, 5)))).tolist(),
                    "top2_margins": rng.exponential(1, 3).tolist()} for _ in range(k)]
        out = choice_features(details)
        for name in ("max_prob", "margin", "entropy", "seq_prob", "token_q10", "token_margin"):
            assert -1e-12 <= out[name] <= 1 + 1e-12, (name, out[name])
        assert out["max_prob"] >= 1 / k - 1e-12 and out["margin"] <= out["max_prob"]
        assert sum(out["probs"]) == pytest.approx(1.0)


def test_agreement():
    assert agreement("a", ["a", "b", "a", "a"]) == 0.75
    assert agreement("c", ["a", "b"]) == 0.0
    assert agreement("a", ["a"]) == 1.0
    assert agreement("a", []) == 0.0


# --- feature matrix and the learned head ----------------------------------------------


def test_feature_matrix_keeps_features_every_item_has_in_a_fixed_order():
    items = [{"agreement": 0.5, "max_prob": 0.9, "verifier": 0.3, "answer_index": 2},
             {"max_prob": 0.6, "agreement": 1.0}]
    x, names = feature_matrix(items)
    assert names == ["max_prob", "agreement"]  # FEATURES order; verifier missing from item 1; no answer_index
    np.testing.assert_array_equal(x, [[0.9, 0.5], [0.6, 1.0]])
    assert names == [f for f in FEATURES if f in names]


def joint_data(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """Correct when max_prob + agreement is high: each feature alone is a weak signal."""
    rng = np.random.default_rng(seed)
    a, b = rng.random(n), rng.random(n)
    p = 1 / (1 + np.exp(-12 * (a + b - 1)))
    return [{"max_prob": x, "agreement": y} for x, y in zip(a, b)], rng.random(n) < p


def test_learned_head_beats_every_single_feature():
    feats, y = joint_data(600, seed=1)
    head, cross = fit_learned(feats, y)
    test_feats, y_test = joint_data(2000, seed=2)
    learned = metrics.auroc(head.predict(test_feats), y_test)
    for name in ("max_prob", "agreement"):
        single = metrics.auroc(signal_values(test_feats, name), y_test)
        assert learned > single + 0.08, (name, learned, single)
        # The cross-fitted calibration predictions are as informative, on calibration.
        assert metrics.auroc(cross, y) > metrics.auroc(signal_values(feats, name), y) + 0.08
    assert head.names == ["max_prob", "agreement"] and np.all(head.coef > 0)
    assert np.all((cross > 0) & (cross < 1))


def test_cross_fitted_predictions_are_not_in_sample():
    feats, y = joint_data(200, seed=3)
    head, cross = fit_learned(feats, y, seed=7)
    in_sample = head.predict(feats)
    assert not np.allclose(cross, in_sample)
    # An item's own label never reaches its cross-fitted prediction; it does reach the full head.
    for i in (0, 123):
        flipped = y.copy()
        flipped[i] = not flipped[i]
        head2, cross2 = fit_learned(feats, flipped, seed=7)
        assert cross2[i] == pytest.approx(cross[i], abs=1e-12)
        assert head2.predict(feats)[i] != pytest.approx(in_sample[i], abs=1e-6)
        assert not np.allclose(cross2, cross)  # the others' folds saw the change
    # Same seed, same folds, same predictions.
    np.testing.assert_array_equal(fit_learned(feats, y, seed=7)[1], cross)


def test_learned_one_class_and_no_features():
    feats = [{"max_prob": 0.2}, {"max_prob": 0.9}, {"max_prob": 0.5}]
    head, cross = fit_learned(feats, np.array([True, True, True]))
    assert np.all(head.predict(feats) > 0.999) and np.all(cross > 0.999)
    head, cross = fit_learned(feats, np.array([False] * 3))
    assert np.all(head.predict(feats) < 0.001) and np.all(cross < 0.001)
    with pytest.raises(ValueError, match="at least one confidence feature"):
        fit_learned([{"answer_index": 0}, {"answer_index": 1}], np.array([1, 0]))


def test_learned_head_json_round_trip():
    feats, y = joint_data(100, seed=4)
    head, _ = fit_learned(feats, y)
    back = LearnedDeferral.from_dict(json.loads(json.dumps(head.to_dict())))
    np.testing.assert_array_equal(back.predict(feats), head.predict(feats))
    assert back.names == head.names


# --- signal_values --------------------------------------------------------------------


def test_signal_values():
    items = [{"max_prob": 0.9, "seq_prob": 0.3}, {"max_prob": 0.4, "seq_prob": 0.8}]
    np.testing.assert_array_equal(signal_values(items, "seq_prob"), [0.3, 0.8])


@pytest.mark.parametrize("signal", ["learned", "entropy", "bogus"])
def test_signal_values_refuses_learned_and_unknown(signal):
    with pytest.raises(ValueError, match=f"unknown signal '{signal}': use one of max_prob, margin"):
        signal_values([{"max_prob": 0.5, "entropy": 0.5}], signal)


def test_missing_signal_names_the_item_and_what_is_there():
    items = [{"max_prob": 0.9, "margin": 0.5, "verifier": 0.2}, {"max_prob": 0.4, "margin": 0.1, "entropy": 0.3}]
    with pytest.raises(ValueError, match=r"'verifier' is not available .*\(item 1\): pick one of margin, max_prob$"):
        signal_values(items, "verifier")


def test_generation_signals_are_signals():
    assert set(GENERATION_SIGNALS) < set(SIGNALS) and "learned" in SIGNALS


def test_label_prior_is_the_log_mean_distribution_and_shifts_the_answer():
    from evals.signals import label_prior

    passes = [[{"token_logprobs": [math.log(0.8)]}, {"token_logprobs": [math.log(0.2)]}],
              [{"token_logprobs": [math.log(0.6)]}, {"token_logprobs": [math.log(0.4)]}]]
    np.testing.assert_allclose(np.exp(label_prior(passes)), [0.7, 0.3])
    item = [{"token_logprobs": [math.log(0.65)]}, {"token_logprobs": [math.log(0.35)]}]
    assert choice_features(item)["answer_index"] == 0
    debiased = choice_features(item, label_prior(passes))
    assert debiased["answer_index"] == 1  # 0.65/0.7 < 0.35/0.3
    assert debiased["max_prob"] == pytest.approx((0.35 / 0.3) / (0.65 / 0.7 + 0.35 / 0.3))
    with pytest.raises(ValueError, match="prior has 3 values for 2 options"):
        choice_features(item, [0.0, 0.0, 0.0])
