"""Cascades of three models (evals/chain.py): routing by hand, then fitted thresholds."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evals.chain import chain_outcome, fit_chain


def B(*v):
    return np.array(v, dtype=bool)


def F(*v):
    return np.array(v, dtype=float)


# Six items, three models (tokens 10 / 100 / 1000 per item), thresholds 0.5 then 0.6.
CORRECT = [B(1, 0, 0, 0, 1, 1), B(0, 1, 0, 1, 0, 1), B(1, 1, 1, 0, 1, 0)]
CONF = [F(0.9, 0.4, 0.4, 0.5, 0.1, 0.49), F(0.0, 0.7, 0.2, 0.0, 0.6, 0.59)]
TOKENS = [np.full(6, 10), np.full(6, 100), np.full(6, 1000)]


def test_chain_outcome_by_hand():
    out = chain_outcome(CORRECT, CONF, TOKENS, [0.5, 0.6])
    # 0: 0.9 >= .5 -> m0; 1: .4 < .5, .7 >= .6 -> m1; 2: falls through -> m2; 3: .5 >= .5 (ties answer) -> m0;
    # 4: .6 >= .6 -> m1; 5: .49, .59 -> m2.
    np.testing.assert_array_equal(out["answered_by"], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(out["correct"], [True, True, True, False, False, False])
    assert out["accuracy"] == pytest.approx(0.5)
    # Every model consulted is paid for: 6 x 10 + 4 x 100 + 2 x 1000.
    assert out["tokens"] == 2460
    assert out["beyond_first"] == pytest.approx(4 / 6)


def test_chain_outcome_extremes():
    first = chain_outcome(CORRECT, CONF, TOKENS, [-math.inf, 0.6])
    assert (first["answered_by"] == 0).all() and first["tokens"] == 60 and first["beyond_first"] == 0
    assert first["accuracy"] == pytest.approx(CORRECT[0].mean())
    last = chain_outcome(CORRECT, CONF, TOKENS, [math.inf, math.inf])
    assert (last["answered_by"] == 2).all() and last["tokens"] == 6 * 1110
    assert last["accuracy"] == pytest.approx(CORRECT[2].mean())
    middle = chain_outcome(CORRECT, CONF, TOKENS, [math.inf, -math.inf])
    assert (middle["answered_by"] == 1).all() and middle["tokens"] == 660
    assert middle["accuracy"] == pytest.approx(CORRECT[1].mean())


def test_two_model_chain_is_the_plain_cascade():
    out = chain_outcome(CORRECT[1:], CONF[1:], TOKENS[1:], [0.5])
    np.testing.assert_array_equal(out["answered_by"], [1, 0, 1, 1, 0, 0])
    assert out["tokens"] == 600 + 3 * 1000


def three_models(n: int, seed: int):
    """Cheap -> mid -> expensive; each cheaper model's confidence tracks its own correctness."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.random(n), rng.random(n)
    correct = [rng.random(n) < c0, rng.random(n) < 0.3 + 0.7 * c1, rng.random(n) < 0.9]
    tokens = [rng.integers(5, 15, n), rng.integers(80, 120, n), rng.integers(900, 1100, n)]
    return correct, [c0, c1], tokens


@pytest.mark.parametrize("target", [0.8, 0.85, 0.9])
def test_fit_chain_reaches_a_target_cheaper_than_always_last(target):
    correct, conf, tokens = three_models(400, seed=1)
    always_last = chain_outcome(correct, conf, tokens, [math.inf, math.inf])
    th = fit_chain(correct, conf, tokens, target_accuracy=target)
    assert len(th) == 2
    out = chain_outcome(correct, conf, tokens, th)
    assert out["accuracy"] >= target
    assert out["tokens"] < always_last["tokens"]
    # A lower target never costs more.
    if target > 0.8:
        cheaper = chain_outcome(correct, conf, tokens, fit_chain(correct, conf, tokens, target_accuracy=0.8))
        assert cheaper["tokens"] <= out["tokens"]


def test_fit_chain_uses_the_middle_model():
    correct, conf, tokens = three_models(400, seed=1)
    out = chain_outcome(correct, conf, tokens, fit_chain(correct, conf, tokens, target_accuracy=0.85))
    shares = np.bincount(out["answered_by"], minlength=3) / 400
    assert (shares > 0.05).all(), shares


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fit_chain_without_target_beats_every_single_model(seed):
    correct, conf, tokens = three_models(300, seed=seed)
    th = fit_chain(correct, conf, tokens)
    out = chain_outcome(correct, conf, tokens, th)
    for ok in correct:
        assert out["accuracy"] >= ok.mean()
    assert out["accuracy"] > max(ok.mean() for ok in correct)  # informative confidences: strictly better


def test_unreachable_target_gives_the_most_accurate_chain():
    correct, conf, tokens = three_models(300, seed=2)
    best = chain_outcome(correct, conf, tokens, fit_chain(correct, conf, tokens))
    out = chain_outcome(correct, conf, tokens, fit_chain(correct, conf, tokens, target_accuracy=0.999))
    assert out["accuracy"] == pytest.approx(best["accuracy"]) and out["tokens"] == best["tokens"]


@pytest.mark.parametrize("n_correct, n_conf, n_tokens", [(3, 1, 3), (3, 2, 2), (1, 0, 1)])
def test_fit_chain_shape_errors(n_correct, n_conf, n_tokens):
    correct, conf, tokens = three_models(20, seed=0)
    with pytest.raises(ValueError, match="n models, n-1 confidences"):
        fit_chain((correct * 2)[:n_correct], (conf * 2)[:n_conf], (tokens * 2)[:n_tokens])
