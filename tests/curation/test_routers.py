"""Routers and teacher ranking on synthetic problems with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest

from curation.routers import (ClassifierRouter, LinUCBSelector, SimilarityRouter, combine_answers,
                              estimate_n_wrong, fit_plackett_luce, rankings_from_scores)

TRUE_WORTH = np.array([0.05, 0.4, 0.1, 0.25, 0.2])  # ranking by worth: 1, 3, 4, 2, 0


def _sample_rankings(n, seed=0):
    rng = np.random.default_rng(seed)
    keys = np.log(TRUE_WORTH) + rng.gumbel(size=(n, len(TRUE_WORTH)))  # Gumbel-max = a PL draw
    return [list(np.argsort(-k)) for k in keys]


def test_plackett_luce_recovers_worths_from_full_rankings():
    rankings = [[[int(i)] for i in r] for r in _sample_rankings(1500)]
    w = fit_plackett_luce(rankings, 5, iters=500)
    assert w.sum() == pytest.approx(1.0)
    assert list(np.argsort(-w)) == list(np.argsort(-TRUE_WORTH))
    np.testing.assert_allclose(w, TRUE_WORTH, rtol=0.15)


def test_plackett_luce_with_ties_and_partial_rankings_keeps_the_order():
    rng = np.random.default_rng(1)
    tied, partial = [], []
    for r in _sample_rankings(2000, seed=2):
        tied.append([[int(r[0]), int(r[1])], [int(r[2])], [int(r[3]), int(r[4])]])
        keep = [int(i) for i in r if i in set(rng.choice(5, 3, replace=False))]
        partial.append([[i] for i in keep])
    order = list(np.argsort(-TRUE_WORTH))
    assert list(np.argsort(-fit_plackett_luce(tied, 5))) == order
    assert list(np.argsort(-fit_plackett_luce(partial, 5))) == order


def test_plackett_luce_from_correctness_matrix_and_finite_extremes():
    rng = np.random.default_rng(3)
    acc = np.array([0.6, 0.2, 0.45, 0.3])
    Y = (rng.random((300, 4)) < acc).astype(float)
    Y[rng.random(Y.shape) < 0.1] = np.nan
    w = fit_plackett_luce(rankings_from_scores(Y), 4)
    assert list(np.argsort(-w)) == [0, 2, 3, 1]
    # item 0 always wins, item 2 always loses, item 3 never appears: worths stay finite and positive
    w = fit_plackett_luce([[[0], [1, 2]], [[0, 1], [2]]] * 20, 4)
    assert np.all(np.isfinite(w)) and np.all(w > 0) and w[0] > w[1] > w[2]
    with pytest.raises(ValueError):
        fit_plackett_luce([[[0], [0]]], 2)


def test_rankings_from_scores_groups_ties_and_drops_missing():
    S = np.array([[1, 0, np.nan, 1], [0.2, 0.9, 0.5, 0.9], [np.nan] * 4])
    assert rankings_from_scores(S) == [[[0, 3], [1]], [[1, 3], [2], [0]], []]


# ------------------------------------------------------------------ routing

P_RIGHT = np.array([[0.9, 0.2, 0.6],   # cluster 0: teacher 0 is the expert
                    [0.2, 0.85, 0.6]])  # cluster 1: teacher 1 is; teacher 2 is the best on average


def _problem(n, seed, d=24, missing=0.1):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(2, d))
    cluster = rng.integers(0, 2, n)
    X = centres[cluster] + 0.6 * rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = (rng.random((n, 3)) < P_RIGHT[cluster]).astype(float)
    Y[rng.random(Y.shape) < missing] = np.nan
    return X, Y, cluster


def _routed_vs_best_fixed(scores, Y_train, cluster_test):
    """Expected accuracy of the routed teacher vs the teacher best on train, on held-out prompts."""
    routed = P_RIGHT[cluster_test, np.argmax(scores, axis=1)].mean()
    best = int(np.nanargmax(np.nanmean(Y_train, axis=0)))
    return routed, P_RIGHT[cluster_test, best].mean()


@pytest.mark.parametrize("router", [ClassifierRouter(), SimilarityRouter(k=10)], ids=["classifier", "similarity"])
def test_router_beats_the_globally_best_teacher(router):
    X, Y, _ = _problem(300, seed=0)
    Xt, _, ct = _problem(300, seed=1)
    P = router.fit(X, Y).predict_proba(Xt)
    assert P.shape == (300, 3) and np.all((P >= 0) & (P <= 1))
    routed, fixed = _routed_vs_best_fixed(P, Y, ct)
    assert routed > fixed + 0.15, (routed, fixed)
    # probabilities stay roughly calibrated: the flat teacher's mean stays near its train accuracy
    assert abs(P[:, 2].mean() - np.nanmean(Y[:, 2])) < 0.08
    assert np.mean(P[ct == 0, 0]) > 0.7 and np.mean(P[ct == 1, 0]) < 0.4


def test_classifier_router_handles_a_teacher_always_right_or_never_answering():
    X, Y, _ = _problem(120, seed=4)
    Y = np.column_stack([Y, np.ones(120), np.full(120, np.nan)])
    mask = np.ones_like(Y, dtype=bool)
    mask[:60, 0] = False
    router = ClassifierRouter().fit(X, Y, mask=mask)
    P = router.predict_proba(X[:5])
    assert P.shape == (5, 5)
    assert np.all(P[:, 3] > 0.98) and np.allclose(P[:, 4], 0.5)
    assert router.C_[3] is None and router.C_[0] in router.Cs


def test_classifier_router_stays_calibrated_for_weak_teachers():
    # A 20%-right teacher must not look like a coin flip (class_weight="balanced" would do that),
    # or routing by argmax would prefer it over a better one.
    X, _, _ = _problem(300, seed=9)
    rng = np.random.default_rng(9)
    Y = (rng.random((300, 2)) < [0.2, 0.35]).astype(float)
    P = ClassifierRouter().fit(X, Y).predict_proba(_problem(200, seed=10)[0])
    assert abs(P[:, 0].mean() - Y[:, 0].mean()) < 0.06
    assert np.mean(P[:, 1] > P[:, 0]) > 0.8


def test_similarity_router_shrinks_toward_global_accuracy():
    X, Y, _ = _problem(200, seed=5, missing=0.0)
    far = SimilarityRouter(k=10, prior_strength=1e6).fit(X, Y).predict_proba(X[:3])
    np.testing.assert_allclose(far, np.tile((np.nansum(Y, 0) + 1) / (len(Y) + 2), (3, 1)), atol=1e-4)


def test_linucb_learns_context_and_is_deterministic():
    X, Y, _ = _problem(400, seed=6)
    Xt, _, ct = _problem(300, seed=7)
    bandit = LinUCBSelector(alpha=0.5, n_components=8, seed=3).fit(X, Y)
    assert bandit.regret_[-1] < bandit.random_regret_[-1] - 40  # far better than uniform picks
    assert bandit.regret_[-1] < 0  # and better than the best single teacher in hindsight
    assert bandit.oracle_regret_[-1] >= 0
    # late in the stream it mostly picks the cluster's expert
    routed, fixed = _routed_vs_best_fixed(bandit.scores(Xt), Y, ct)
    assert routed > fixed + 0.15, (routed, fixed)
    again = LinUCBSelector(alpha=0.5, n_components=8, seed=3).fit(X, Y)
    np.testing.assert_array_equal(bandit.choices_, again.choices_)
    np.testing.assert_array_equal(bandit.scores(Xt), again.scores(Xt))
    other = LinUCBSelector(alpha=0.5, n_components=8, seed=4).fit(X, Y)
    assert not np.array_equal(bandit.order_, other.order_)


def test_linucb_only_picks_teachers_that_answered():
    X, Y, _ = _problem(100, seed=8, missing=0.0)
    Y[:, 0] = np.nan
    Y[:50, 1] = np.nan
    b = LinUCBSelector(seed=0, n_components=4).fit(X, Y)
    assert 0 not in set(b.choices_)
    assert all(not np.isnan(Y[i, a]) for i, a in zip(b.order_, b.choices_))


# ------------------------------------------------------------------ combining answers

def _logit(p):
    return math.log(p / (1 - p))


@pytest.mark.parametrize("p_weak", [0.62, 0.66, 0.69, 0.8])
def test_weighted_vote_three_weak_beat_one_strong_only_when_log_odds_say_so(p_weak):
    keys = [["x", "x", "x", "y"]]
    (c,) = combine_answers(keys, np.array([[p_weak, p_weak, p_weak, 0.9]]))
    three_win = 3 * _logit(p_weak) > _logit(0.9)  # flips at p_weak ~= 0.675
    assert c.answer == ("x" if three_win else "y")
    assert c.teacher == (0 if three_win else 3)
    assert c.support == pytest.approx(3 * _logit(p_weak) if three_win else _logit(0.9))
    assert c.supporters == ((0, 1, 2) if three_win else (3,))


def test_weighted_vote_with_many_possible_wrong_answers_rewards_agreement():
    keys = [["x", "x", "x", "y"]]
    scores = np.array([0.4, 0.4, 0.4, 0.9])  # (T,) broadcasts over prompts
    assert combine_answers(keys, scores)[0].answer == "y"  # binary model: p < .5 agreeing counts against
    assert combine_answers(keys, scores, n_wrong=20)[0].answer == "x"
    assert combine_answers(keys, scores, mode="argmax")[0] == (3, "y", 0.9, (3,))
    assert combine_answers(keys, scores, mode="majority")[0].answer == "x"


def test_combine_answers_ignores_missing_answers_and_scores():
    keys = [["a", None, "b"], [None, None, None], ["a", "b", "b"]]
    S = np.array([[0.7, 0.99, 0.6], [0.5, 0.5, 0.5], [0.7, 0.6, np.nan]])
    out = combine_answers(keys, S)
    assert out[0].answer == "a" and out[0].teacher == 0
    assert out[1] == (None, None, 0.0, ())
    assert out[2].answer == "a" and out[2].supporters == (0,)  # teacher 2 has no score
    with pytest.raises(ValueError):
        combine_answers(keys, S * 10)
    with pytest.raises(ValueError):
        combine_answers(keys, S, mode="best")


def test_estimate_n_wrong():
    keys = [["1", "2", "3"], ["1", "1", "4"], ["5", "6", "7"]]
    Y = np.zeros((3, 3))
    # 9 wrong pairs, one agreeing ("1" == "1"): (9 + 2) / (1 + 1)
    assert estimate_n_wrong(keys, Y) == pytest.approx(5.5)
    assert estimate_n_wrong([["1", "1"]] * 50, np.zeros((50, 2))) == pytest.approx(52 / 51)
    assert estimate_n_wrong([["1", "1"], ["2", "3"]], [[1, 0], [0, 1]]) == 2.0  # no wrong pairs: prior
