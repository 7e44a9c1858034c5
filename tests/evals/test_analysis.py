"""The full cascade result (evals/analysis.analyse) on synthetic per-item predictions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals import metrics
from evals.analysis import analyse
from evals.calibrate import Calibrator, ltt_p_value
from evals.results import CascadeResult

LABELS = ["A", "B", "C"]
PRICES = {"student": 1.0, "t1": 4.0, "t2": 20.0}


def make_preds(n_cal: int = 300, n_test: int = 300, seed: int = 0, informative: bool = True,
               overconfident: bool = True) -> dict[str, list[dict]]:
    """Student (max_prob in [0.34, 1]) and two teachers (80% and 95% right), aligned by prompt id.

    Informative: the student is right with probability max_prob**2 (over-confident) or max_prob;
    otherwise with the same probability whatever its max_prob says."""
    rng = np.random.default_rng(seed)
    n = n_cal + n_test
    ids = [f"q{i:04d}" for i in range(n)]
    split = ["calibration"] * n_cal + ["test"] * n_test
    gold = rng.choice(LABELS, n)
    conf = rng.uniform(0.34, 1.0, n)
    p_s = conf**2 if overconfident else conf
    p_s = p_s if informative else np.full(n, p_s.mean())
    conf_t1 = rng.uniform(0.34, 1.0, n)

    def model(p_right, tokens, latency_per_token, features):
        ok = rng.random(n) < p_right
        wrong = [next(lab for lab in LABELS if lab != g) for g in gold]
        return [{"prompt_id": ids[i], "split": split[i], "correct": bool(ok[i]),
                 "answer": gold[i] if ok[i] else wrong[i], "tokens": int(tokens[i]),
                 "latency_s": float(tokens[i] * latency_per_token), "features": features(i), "request_key": f"k{i}"}
                for i in range(n)]

    preds = {
        "student": model(p_s, rng.integers(20, 40, n), 0.001, lambda i: {"max_prob": float(conf[i]),
                                                                          "agreement": float(rng.random())}),
        "t1": model(0.55 + 0.4 * conf_t1, rng.integers(80, 120, n), 0.002, lambda i: {"max_prob": float(conf_t1[i])}),
        "t2": model(np.full(n, 0.95), rng.integers(300, 500, n), 0.004, lambda i: {"max_prob": 0.9}),
    }
    for ps in preds.values():  # order must not matter
        rng.shuffle(ps)
    return preds


def by_id(preds: list[dict], split: str = "test") -> list[dict]:
    return sorted((p for p in preds if p["split"] == split), key=lambda p: p["prompt_id"])


def threshold_of(result: CascadeResult) -> float:
    return result.threshold


@pytest.fixture(scope="module")
def preds():
    return make_preds()


@pytest.fixture(scope="module")
def small():
    return make_preds(120, 120, seed=3)


@pytest.fixture(scope="module")
def student_only(small):
    """One teacher, only the student priced, no slice map."""
    return analyse(small, "student", ["t2"], calibration="none", target_accuracy=0.85, prices={"student": 2.0})


@pytest.fixture(scope="module")
def slices(preds):
    """Uneven slices: half the items in "a", a quarter each in "b" and "c"."""
    return {p["prompt_id"]: "aabc"[int(p["prompt_id"][1:]) % 4] for p in preds["student"]}


@pytest.fixture(scope="module")
def result(preds, slices):
    return analyse(preds, "student", ["t1", "t2"], calibration="none", target_accuracy=0.85, prices=PRICES,
                   slice_of=slices)


def test_rows_for_every_role(result):
    rows = result.rows
    assert [r.role for r in rows] == ["student", "teacher", "teacher", "cascade", "random", "oracle", "chain"]
    assert [r.model for r in rows[:3]] == ["student", "t1", "t2"]
    assert rows[-1].model == "chain: student -> t1 -> t2"
    assert result.cascade_teacher == "t2" and result.student == "student"
    for r in rows:
        assert r.n == 300 and r.ci_low <= r.accuracy <= r.ci_high
        assert r.cost_per_1k_usd is not None and math.isfinite(r.cost_per_1k_usd)  # was not None after jsonable
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: inf/nan became None


def test_rows_match_the_predictions(result, preds):
    rows = {r.role + ":" + r.model: r for r in result.rows}
    for m in ("student", "t1", "t2"):
        role = "student" if m == "student" else "teacher"
        assert rows[f"{role}:{m}"].accuracy == pytest.approx(np.mean([p["correct"] for p in by_id(preds[m])]))
    s, t = by_id(preds["student"]), by_id(preds["t2"])
    thr = threshold_of(result)
    esc = np.array([p["features"]["max_prob"] < thr for p in s])  # calibration "none": raw is the confidence
    ok = np.where(esc, [p["correct"] for p in t], [p["correct"] for p in s])
    cascade = rows["cascade:cascade"]
    assert cascade.accuracy == pytest.approx(ok.mean()) and cascade.teacher_share == pytest.approx(esc.mean())
    assert 0.1 < esc.mean() < 0.9  # a real cascade, not one model
    oracle = rows["oracle:oracle routing"]
    assert oracle.accuracy == pytest.approx(np.mean([a["correct"] or b["correct"] for a, b in zip(s, t)]))
    assert oracle.accuracy >= cascade.accuracy


def test_threshold_is_the_chosen_point_and_meets_the_target_on_calibration(result):
    chosen = result.fit.chosen
    assert result.threshold == chosen["threshold"]
    assert chosen["reached"] is True and chosen["accuracy"] >= 0.85
    assert result.fit.calib_accuracy == pytest.approx(chosen["accuracy"])
    assert result.fit.calibration_method == "none" and result.calibrator == {"method": "none", "params": {}}


def test_costs_from_prices(result, preds):
    rows = {r.role: r for r in result.rows if r.role != "teacher"}
    s, t1, t2 = (by_id(preds[m]) for m in ("student", "t1", "t2"))
    s_cost = np.array([p["tokens"] for p in s]) * PRICES["student"] / 1e6
    t2_cost = np.array([p["tokens"] for p in t2]) * PRICES["t2"] / 1e6
    s_lat, t2_lat = np.array([p["latency_s"] for p in s]), np.array([p["latency_s"] for p in t2])
    teachers = result.rows_of("teacher")
    assert teachers[0].cost_per_1k_usd == pytest.approx(1000 * np.mean([p["tokens"] for p in t1]) * 4.0 / 1e6)
    assert teachers[1].cost_per_1k_usd == pytest.approx(1000 * t2_cost.mean())
    assert teachers[1].latency_per_1k_s == pytest.approx(1000 * t2_lat.mean())
    assert rows["student"].cost_per_1k_usd == pytest.approx(1000 * s_cost.mean())
    esc = np.array([p["features"]["max_prob"] < threshold_of(result) for p in s])
    # The student runs on every query; the teacher only on the escalated ones.
    assert rows["cascade"].cost_per_1k_usd == pytest.approx(1000 * (s_cost.mean() + t2_cost[esc].sum() / len(s)))
    assert rows["cascade"].latency_per_1k_s == pytest.approx(1000 * (s_lat.mean() + t2_lat[esc].sum() / len(s)))
    share = rows["random"].teacher_share
    assert rows["random"].cost_per_1k_usd == pytest.approx(1000 * (s_cost.mean() + share * t2_cost.mean()))
    oracle_esc = np.array([not a["correct"] and b["correct"] for a, b in zip(s, t2)])
    assert rows["oracle"].cost_per_1k_usd == pytest.approx(1000 * (s_cost.mean() + t2_cost[oracle_esc].sum() / len(s)))
    # Chain: every model consulted is paid, at its own price (calibration "none": raw max_prob routes).
    th0, th1 = result.chain["thresholds"]
    assert math.isfinite(th0) and math.isfinite(th1)  # finite here
    reach_t1 = np.array([p["features"]["max_prob"] < th0 for p in s])
    reach_t2 = reach_t1 & np.array([p["features"]["max_prob"] < th1 for p in t1])
    t1_cost = np.array([p["tokens"] for p in t1]) * PRICES["t1"] / 1e6
    expected = s_cost.sum() + t1_cost[reach_t1].sum() + t2_cost[reach_t2].sum()
    assert rows["chain"].cost_per_1k_usd == pytest.approx(1000 * expected / len(s))
    assert rows["chain"].teacher_share == pytest.approx(reach_t1.mean())
    assert result.chain["answered_share"]["t2"] == pytest.approx(reach_t2.mean())


def test_student_cost_is_counted_on_every_query(small, student_only):
    s_cost = 1000 * np.mean([p["tokens"] for p in by_id(small["student"])]) * 2.0 / 1e6
    costs = {r.role: r.cost_per_1k_usd for r in student_only.rows}
    assert costs["teacher"] == 0.0
    assert 0 < student_only.rows[3].teacher_share < 1
    for role in ("student", "cascade", "random", "oracle"):
        assert costs[role] == pytest.approx(s_cost), role
    assert student_only.prices_per_1m_tokens == {"student": 2.0}
    assert student_only.chain is None and len(student_only.rows) == 5


def test_cascade_vs_random(result):
    cvr = result.cascade_vs_random
    rows = {r.role: r for r in result.rows}
    assert cvr.difference == pytest.approx(rows["cascade"].accuracy - rows["random"].accuracy)
    assert cvr.teacher_share == pytest.approx(rows["cascade"].teacher_share)
    assert cvr.ci_low <= cvr.difference <= cvr.ci_high
    assert cvr.ci_low > 0  # an informative confidence beats random routing at the same share
    assert result.curve_vs_random.ci_low > 0  # ... and over the whole curve


def test_random_confidence_does_not_beat_random_routing():
    out = analyse(make_preds(seed=1, informative=False), "student", ["t2"], target_accuracy=0.85)
    cvr = out.cascade_vs_random
    assert 0.1 < cvr.teacher_share < 0.95
    assert cvr.ci_low <= 0 <= cvr.ci_high
    assert out.metric_cis["apgr"].ci_low <= 0.5 <= out.metric_cis["apgr"].ci_high
    assert out.curve_vs_random.ci_low <= 0 <= out.curve_vs_random.ci_high


def test_metric_cis(result):
    cis = result.metric_cis
    assert set(cis) == {"apgr", "cpt_50", "cpt_80"}
    for name in ("apgr", "cpt_50", "cpt_80"):
        c = cis[name]
        assert c.value == pytest.approx(getattr(result, name))  # same test items as the point estimates
        assert c.ci_low <= c.ci_high
    assert cis["apgr"].ci_low > 0.5  # better than random routing (0.5) with confidence
    assert 0 <= cis["cpt_50"].value <= cis["cpt_80"].value <= 1


def test_confidence_quality_before_and_after_calibration(preds):
    out = analyse(preds, "student", ["t2"], calibration="platt", target_accuracy=0.85)
    q = out.confidence_quality
    s = by_id(preds["student"])
    raw = np.array([p["features"]["max_prob"] for p in s])
    ok = np.array([p["correct"] for p in s], dtype=float)
    assert q["before"].ece.value == pytest.approx(metrics.ece(raw, ok, 10))
    assert q["before"].brier.value == pytest.approx(metrics.brier(raw, ok))
    after = Calibrator.from_dict(out.calibrator).apply(raw)
    assert out.calibrator["method"] == "platt"
    assert q["after"].ece.value == pytest.approx(metrics.ece(after, ok, 10))
    # Over-confident raw scores (truth = raw**2): platt lowers ECE and Brier, keeps the ranking.
    assert q["after"].ece.value < q["before"].ece.value - 0.05
    assert q["after"].brier.value < q["before"].brier.value
    assert q["after"].auroc.value == pytest.approx(q["before"].auroc.value)
    for part in ("before", "after"):
        assert len(q[part].bins) == 10 and sum(b["count"] for b in q[part].bins) == 300
        for name in ("ece", "brier", "auroc"):
            assert getattr(q[part], name).ci_low <= getattr(q[part], name).ci_high
    # The calibrated confidence's quality is what the report shows: Brier, AUROC and bins on it too.
    assert q["after"].brier.value == pytest.approx(metrics.brier(after, ok))
    assert q["after"].auroc.value == pytest.approx(metrics.auroc(after, ok))
    assert q["after"].bins == metrics.reliability_bins(after, ok, 10)


def test_risk_coverage(result, preds):
    rc = result.risk_coverage
    cov = [p["coverage"] for p in rc]
    assert np.all(np.diff(cov) > 0) and cov[-1] == pytest.approx(1.0) and cov[0] > 0
    assert np.all(np.diff([p["threshold"] for p in rc]) < 0)
    s = by_id(preds["student"])
    assert rc[-1]["risk"] == pytest.approx(1 - np.mean([p["correct"] for p in s]))
    # Informative confidence: the surest half is right more often than all items.
    half = next(p for p in rc if p["coverage"] >= 0.5)
    assert half["risk"] < rc[-1]["risk"]
    assert 0 < result.aurc < rc[-1]["risk"]


def test_slices(result, preds, slices):
    rows = result.slices
    assert sum(r.n for r in rows) == 300 and rows[0].slice == "a" and rows[0].n == 150
    assert [r.n for r in rows] == sorted((r.n for r in rows), reverse=True)
    s, t = by_id(preds["student"]), by_id(preds["t2"])
    for r in rows:
        idx = [i for i, p in enumerate(s) if slices[p["prompt_id"]] == r.slice]
        assert r.slice in "abc"
        assert r.n == len(idx)
        assert r.student == pytest.approx(np.mean([s[i]["correct"] for i in idx]))
        assert r.teacher == pytest.approx(np.mean([t[i]["correct"] for i in idx]))
        esc = [s[i]["features"]["max_prob"] < threshold_of(result) for i in idx]
        ok = [t[i]["correct"] if e else s[i]["correct"] for i, e in zip(idx, esc)]
        assert r.cascade == pytest.approx(np.mean(ok))


def test_without_a_slice_map_there_is_one_slice(student_only):
    out = student_only
    assert [r.slice for r in out.slices] == ["all"]
    cascade = out.row("cascade")
    assert out.slices[0].cascade == pytest.approx(cascade.accuracy)


def test_chain_with_two_teachers(result):
    chain = result.chain
    assert chain["models"] == ["student", "t1", "t2"]
    assert len(chain["thresholds"]) == 2 and len(chain["calibrators"]) == 1
    assert chain["calibrators"][0]["method"] == "none"
    assert sum(chain["answered_share"].values()) == pytest.approx(1.0)
    row = result.row("chain")
    assert row.teacher_share == pytest.approx(1 - chain["answered_share"]["student"])
    # With a target the chain's teacher tokens are below always asking t2.
    t2 = next(r for r in result.rows if r.model == "t2")
    assert row.teacher_tokens_per_1k < t2.tokens_per_1k


def test_fidelity(result, preds):
    s, t = by_id(preds["student"]), by_id(preds["t2"])
    same = np.mean([a["answer"] == b["answer"] for a, b in zip(s, t)])
    assert result.fidelity.teacher == "t2"
    assert result.fidelity.answer_agreement.value == pytest.approx(same)


def test_delta_and_budgets_flow_through(small, student_only):
    out = analyse(small, "student", ["t2"], calibration="none", target_accuracy=0.8, delta=0.2)
    chosen = out.fit.chosen
    n_cal = out.fit.n_calib
    assert out.fit.delta == 0.2 and n_cal == 120
    assert chosen["reached"] is True
    # The guarantee covers a batch the size of the test split (120): tested at delta/2 against a
    # higher bar that leaves room for the batch's own binomial noise.
    g = chosen["guarantee"]
    assert g["batch_size"] == 120 and g["level"] == 0.1 and g["tested_accuracy"] > 0.8
    assert ltt_p_value(round(chosen["accuracy"] * n_cal), n_cal, g["tested_accuracy"]) <= 0.1
    assert chosen["teacher_share"] > student_only.fit.chosen["teacher_share"]
    assert out.threshold == chosen["threshold"] and out.threshold > student_only.threshold
    budget = analyse(small, "student", ["t2"], max_teacher_share=0.2)
    assert budget.fit.chosen["teacher_share"] <= 0.2 and budget.fit.chosen["reached"] is None
    assert budget.fit.calib_teacher_share <= 0.2 and budget.fit.max_teacher_share == 0.2
    # Cost per 1k queries on calibration: student ~30 tokens at $1/M, t2 ~400 at $20/M.
    cost = analyse(small, "student", ["t2"], max_cost_per_1k=3.0, prices=PRICES)
    assert cost.fit.chosen["cost_per_1k"] <= 3.0 and cost.fit.max_cost_per_1k == 3.0
    assert 0 < cost.fit.chosen["teacher_share"] < 0.5


def test_learned_signal(small):
    out = analyse(small, "student", ["t2"], signal="learned", target_accuracy=0.85)
    assert out.signal == "learned"
    head = out.learned_head
    assert head["names"] == ["max_prob", "agreement"] and head["coef"][0] > 0
    assert all(r.cost_per_1k_usd == 0.0 for r in out.rows)  # unpriced models cost 0


def test_misaligned_items_raise(small):
    preds = small
    broken = dict(preds, t2=[p for p in preds["t2"] if p["prompt_id"] != by_id(preds["t2"])[0]["prompt_id"]])
    with pytest.raises(ValueError, match="same non-empty calibration and test items"):
        analyse(broken, "student", ["t2"])
    no_test = {m: [p for p in ps if p["split"] != "test"] for m, ps in preds.items()}
    with pytest.raises(ValueError, match="same non-empty"):
        analyse(no_test, "student", ["t2"])


def test_missing_signal_raises(small):
    preds = small
    with pytest.raises(ValueError, match="'verifier' is not available"):
        analyse(preds, "student", ["t2"], signal="verifier")


def test_oracle_cost_is_the_cost_of_the_items_it_escalates(small):
    # The teacher is long-winded exactly where the student is wrong: the oracle escalates those items.
    preds = {m: [dict(p) for p in ps] for m, ps in small.items()}
    wrong = {p["prompt_id"] for p in preds["student"] if not p["correct"]}
    for p in preds["t2"]:
        p["tokens"] = 1000 if p["prompt_id"] in wrong else 100
    out = analyse(preds, "student", ["t2"], calibration="none", target_accuracy=0.85, prices={"t2": 1e6})
    for row in out.rows:  # $1 per teacher token, students free: cost per 1k = teacher tokens per 1k
        assert row.cost_per_1k_usd == pytest.approx(row.teacher_tokens_per_1k), row.role


def test_auto_signal_is_chosen_on_calibration_only(preds):
    out = analyse(preds, "student", ["t2"], signal="auto", target_accuracy=0.85)
    sel = out.signal_selection
    assert sel["requested"] == "auto" and out.signal == sel["chosen"] in sel["calibration_auroc"]
    assert sel["calibration_auroc"][sel["chosen"]] == max(sel["calibration_auroc"].values())
    # Changing only test answers changes neither the choice nor the calibration AUROCs.
    flipped = {m: [dict(p, correct=not p["correct"]) if p["split"] == "test" else p for p in ps]
               for m, ps in preds.items()}
    again = analyse(flipped, "student", ["t2"], signal="auto", target_accuracy=0.85)
    assert again.signal_selection == sel
    fixed = analyse(preds, "student", ["t2"], signal=sel["chosen"], target_accuracy=0.85)
    assert fixed.rows == out.rows and fixed.signal_selection is None
