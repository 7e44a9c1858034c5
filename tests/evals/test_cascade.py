"""Cascade math on hand-made arrays where the right answer is known."""

import json
import math

import numpy as np
import pytest

from evals import metrics
from evals.cascade import (
    ModelAnswers,
    cascade_curve,
    cascade_outcome,
    evaluate,
    fit_threshold,
    oracle_routing,
    random_routing,
)


def _pair(student_ok, teacher_ok, conf, s_tok=10, t_tok=100):
    n = len(student_ok)
    s = ModelAnswers("s", np.array(student_ok, bool), np.full(n, s_tok), np.array(conf, float))
    t = ModelAnswers("t", np.array(teacher_ok, bool), np.full(n, t_tok))
    return s, t


def _synthetic(n, rng, separating, acc_s=0.6, acc_t=0.9):
    """Student/teacher with independent errors; confidence either separates the
    student's right from wrong answers perfectly, or is pure noise."""
    s_ok = rng.random(n) < acc_s
    t_ok = rng.random(n) < acc_t
    if separating:
        conf = np.where(s_ok, 0.6 + 0.4 * rng.random(n), 0.4 * rng.random(n))
    else:
        conf = rng.random(n)
    return (ModelAnswers("student", s_ok, rng.integers(50, 150, n), conf),
            ModelAnswers("teacher", t_ok, rng.integers(400, 600, n)))


def test_outcome_counts_tokens_and_escalation():
    s, t = _pair([1, 0, 1, 0], [1, 1, 0, 0], [0.9, 0.2, 0.4, 0.8])
    out = cascade_outcome(s, t, 0.5)
    assert out["escalated"].tolist() == [False, True, True, False]
    assert out["accuracy"] == pytest.approx(0.5)  # s right, t right, t wrong, s wrong
    assert out["teacher_share"] == 0.5
    assert out["teacher_tokens"] == 200
    assert out["tokens"] == 40 + 200


def test_curve_endpoints_ties_and_thresholds_reproduce_points():
    s, t = _pair([1, 0, 1, 0, 1], [0, 1, 1, 1, 0], [0.9, 0.3, 0.3, 0.1, 0.7])
    curve = cascade_curve(s, t)
    shares = [p["teacher_share"] for p in curve]
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] == 1
    assert len(curve) == 5  # 4 distinct confidences -> 5 cuts; the tie escalates together
    assert curve[0]["threshold"] == -math.inf and curve[-1]["threshold"] == math.inf
    assert curve[0]["accuracy"] == pytest.approx(s.accuracy)
    assert curve[-1]["accuracy"] == pytest.approx(t.accuracy)
    for p in curve:
        out = cascade_outcome(s, t, p["threshold"])
        assert out["accuracy"] == pytest.approx(p["accuracy"])
        assert out["teacher_share"] == pytest.approx(p["teacher_share"])
        assert out["tokens"] == p["tokens"]


def test_adjacent_float_confidences_still_separate():
    a = 0.5
    b = np.nextafter(a, 1.0)
    s, t = _pair([0, 1], [1, 0], [a, b])
    curve = cascade_curve(s, t)
    assert [p["teacher_share"] for p in curve] == [0, 0.5, 1]
    assert cascade_outcome(s, t, curve[1]["threshold"])["accuracy"] == 1.0


def test_separating_confidence_reaches_oracle():
    s, t = _synthetic(2000, np.random.default_rng(0), separating=True)
    best = max(p["accuracy"] for p in cascade_curve(s, t))
    assert best == pytest.approx(oracle_routing(s, t)["accuracy"])  # no router beats the oracle
    # Escalating exactly the student's errors gives student-right + teacher-right-on-rest.
    out = cascade_outcome(s, t, 0.5)
    assert out["escalated"].tolist() == (~s.correct).tolist()
    assert out["accuracy"] == pytest.approx(np.mean(s.correct | t.correct))
    assert out["accuracy"] == pytest.approx(oracle_routing(s, t)["accuracy"])


def test_random_confidence_matches_random_routing():
    rng = np.random.default_rng(1)
    s, t = _synthetic(20000, rng, separating=False)
    for threshold in (0.25, 0.5, 0.75):
        out = cascade_outcome(s, t, threshold)
        expected = random_routing(s, t, out["teacher_share"])
        assert out["accuracy"] == pytest.approx(expected, abs=0.015)


def test_random_routing_and_oracle_formulas():
    s, t = _pair([1, 1, 0, 0], [1, 0, 1, 0], [0.5] * 4)
    assert random_routing(s, t, 0.0) == 0.5 and random_routing(s, t, 1.0) == 0.5
    s2, t2 = _pair([1, 0, 0, 0], [1, 1, 1, 1], [0.5] * 4)
    assert random_routing(s2, t2, 0.5) == pytest.approx(0.625)
    orc = oracle_routing(s, t)
    assert orc["accuracy"] == 0.75 and orc["teacher_share"] == 0.25
    assert orc["teacher_tokens"] == 100


def test_fit_threshold_respects_target_and_budget_on_calibration():
    s, t = _synthetic(1000, np.random.default_rng(2), separating=False)
    curve = cascade_curve(s, t)
    for target in (0.65, 0.75, 0.85):
        th = fit_threshold(s, t, target_accuracy=target)
        out = cascade_outcome(s, t, th)
        assert out["accuracy"] >= target
        # ...and with the lowest share that does so.
        reaching = [p["teacher_share"] for p in curve if p["accuracy"] >= target]
        assert out["teacher_share"] == min(reaching)
    for budget in (0.0, 0.3, 0.6):
        th = fit_threshold(s, t, max_teacher_share=budget)
        out = cascade_outcome(s, t, th)
        assert out["teacher_share"] <= budget + 1e-12
        assert out["accuracy"] == max(p["accuracy"] for p in curve if p["teacher_share"] <= budget)


def test_fit_threshold_unreachable_target_and_default():
    s, t = _pair([1, 0, 1, 0], [0, 1, 0, 0], [0.9, 0.1, 0.8, 0.2])
    best = fit_threshold(s, t)  # escalating only the 0.1 item is best: 3/4
    assert cascade_outcome(s, t, best)["accuracy"] == 0.75
    assert cascade_outcome(s, t, best)["teacher_share"] == 0.25
    assert fit_threshold(s, t, target_accuracy=0.99) == best
    # Ties in accuracy go to fewer teacher calls: a useless teacher is never called.
    s2, t2 = _pair([1, 0], [1, 0], [0.9, 0.1])
    assert cascade_outcome(s2, t2, fit_threshold(s2, t2))["teacher_share"] == 0
    with pytest.raises(ValueError):
        fit_threshold(s, t, target_accuracy=1.5)


def test_model_answers_validation():
    with pytest.raises(ValueError):
        ModelAnswers("x", np.array([True, False]), np.array([1]))
    with pytest.raises(ValueError):
        ModelAnswers("x", np.array([0.5, 1.0]), np.array([1, 2]))
    with pytest.raises(ValueError):
        ModelAnswers("x", np.array([1, 0]), np.array([1, 2]), np.array([0.1, np.nan]))
    s, t = _pair([1], [1], [0.5])
    with pytest.raises(ValueError):
        cascade_outcome(t, s, 0.5)  # the "student" has no confidence


def test_evaluate_end_to_end_is_json_and_uses_calibration_only():
    rng = np.random.default_rng(3)
    sc, tc = _synthetic(800, rng, separating=True)
    st, tt = _synthetic(1200, rng, separating=True)
    weak_c = ModelAnswers("weak", rng.random(800) < 0.5, np.full(800, 5))
    weak_t = ModelAnswers("weak", rng.random(1200) < 0.5, np.full(1200, 5))
    res = evaluate(sc, [weak_c, tc], st, [weak_t, tt], max_teacher_share=0.5)
    json.dumps(res.to_dict(), allow_nan=False)
    assert res.cascade_teacher == "teacher"
    roles = [r.role for r in res.rows]
    assert roles == ["student", "teacher", "teacher", "cascade", "random", "oracle"]
    casc = res.rows[3]
    assert casc.ci_low <= casc.accuracy <= casc.ci_high
    assert res.fit.calib_teacher_share <= 0.5
    assert res.cascade_vs_random.ci_low > 0  # separating confidence beats random
    assert res.apgr > 0.6 and metrics.auroc(st.confidence, st.correct) == 1.0
    assert casc.tokens_per_1k == pytest.approx(
        casc.teacher_tokens_per_1k + 1000 * st.tokens.mean())


def test_evaluate_rejects_non_probability_confidence_and_serialises_inf():
    s, t = _pair([1, 0, 1, 0], [1, 1, 1, 1], [2.0, 0.1, 0.8, 0.2])
    with pytest.raises(ValueError):
        evaluate(s, [t], s, [t])
    s, t = _pair([0, 0, 0, 0], [1, 1, 1, 1], [0.9, 0.1, 0.8, 0.2])
    res = evaluate(s, [t], s, [t])  # everything escalates: threshold +inf
    assert res.threshold == math.inf and res.threshold_text == "inf"
    assert res.to_dict()["threshold"] is None and res.to_dict()["threshold_text"] == "inf"
    json.dumps(res.to_dict(), allow_nan=False)
