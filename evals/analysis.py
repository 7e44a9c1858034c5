"""From per-item predictions to the full cascade result: signal, calibration, threshold,
and every number of the report with a bootstrap confidence interval.

Everything that is fitted (the learned deferral head, the calibrator, the threshold, the
choice of cascade teacher) sees only the calibration split; the test split is only scored.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from core.errors import DistillError
from core.stats import bootstrap_ci
from evals import metrics
from evals.calibrate import choose_threshold, fit_calibrator
from evals.cascade import ModelAnswers, cascade_curve, evaluate
from evals.results import CascadeResult, ConfidenceQuality, Fidelity, Interval, Row, Slice
from evals.chain import chain_outcome, fit_chain
from evals.signals import SIGNALS, fit_learned, signal_values


def _by_split(preds: list[dict], split: str) -> list[dict]:
    return sorted((p for p in preds if p["split"] == split), key=lambda p: p["prompt_id"])


def _answers(name: str, part: list[dict], conf: np.ndarray | None = None) -> ModelAnswers:
    return ModelAnswers(name=name, correct=np.array([p["correct"] for p in part], dtype=bool),
                        tokens=np.array([p["tokens"] for p in part], dtype=int), confidence=conf)


def _cost(tokens: np.ndarray, model: str, prices: dict[str, float]) -> np.ndarray:
    """USD per item from tokens x the model's price per million tokens (0 when not priced)."""
    return tokens * prices.get(model, 0.0) / 1e6


def raw_confidence(signal: str, calib: list[dict], test: list[dict], seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(calibration raw scores, test raw scores, what was fitted) for the chosen signal."""
    if signal == "learned":
        head, calib_raw = fit_learned([p["features"] for p in calib], np.array([p["correct"] for p in calib]),
                                      seed=seed)
        return calib_raw, head.predict([p["features"] for p in test]), {"learned_head": head.to_dict()}
    return (signal_values([p["features"] for p in calib], signal),
            signal_values([p["features"] for p in test], signal), {})


def select_signal(calib: list[dict], seed: int) -> tuple[str, dict]:
    """`--signal auto`: the signal whose confidence best separates the student's right and wrong
    CALIBRATION answers (AUROC; the learned head's cross-fitted predictions), so choosing among
    signals never looks at the test split. Ties go to the earlier signal in SIGNALS."""
    ok = np.array([p["correct"] for p in calib], dtype=bool)
    aurocs = {}
    for name in SIGNALS:
        if name != "learned" and any(name not in p["features"] for p in calib):
            continue
        value = metrics.auroc(raw_confidence(name, calib, calib, seed)[0], ok)
        if not math.isnan(value):
            aurocs[name] = value
    if not aurocs:  # one class on calibration: every signal is as good as any
        first = available_signals(calib)[0]
        return first, {"requested": "auto", "chosen": first, "calibration_auroc": {}}
    best = max(aurocs, key=lambda k: (aurocs[k], -SIGNALS.index(k)))
    return best, {"requested": "auto", "chosen": best, "calibration_auroc": aurocs}


class SignalUnavailable(DistillError, ValueError):
    """A requested signal the predictions have no feature for (a ValueError for older callers)."""


def available_signals(preds: list[dict]) -> list[str]:
    """The signals every prediction has a feature for (open answers have no option signals), and
    `learned` over them; in SIGNALS order."""
    have = [s for s in SIGNALS if s != "learned" and all(s in p["features"] for p in preds)]
    return [*have, "learned"] if have else ["learned"]


def check_signal(signal: str, preds: list[dict]) -> None:
    """One clear line when the requested signal is not in these predictions' features."""
    if signal in ("auto", "learned") or all(signal in p["features"] for p in preds):
        return
    why = " (an open-answer task has no options to score)" if signal in ("max_prob", "margin") else ""
    raise SignalUnavailable(f"signal '{signal}' is not available for these answers{why}: use one of "
                       f"{', '.join(available_signals(preds))} or auto")


def _with_ci(fn, *arrays, seed: int) -> Interval:
    return Interval.of(bootstrap_ci(fn, *arrays, n=500, seed=seed))


def _routing_cis(s_ok: np.ndarray, t_ok: np.ndarray, conf: np.ndarray, s_tok: np.ndarray,
                 t_tok: np.ndarray, seed: int) -> dict[str, Interval]:
    """APGR and CPT(50%/80%) recomputed on bootstrap resamples of the test items."""
    def stat(kind):
        def fn(a, b, c, d, e):
            s, t = ModelAnswers("s", a, d, c), ModelAnswers("t", b, e)
            curve = cascade_curve(s, t)
            if kind == "apgr":
                return metrics.apgr(curve, s.accuracy, t.accuracy)
            return metrics.cpt(curve, s.accuracy, t.accuracy, kind)
        return fn
    return {name: _with_ci(stat(kind), s_ok, t_ok, conf, s_tok, t_tok, seed=seed)
            for name, kind in (("apgr", "apgr"), ("cpt_50", 0.5), ("cpt_80", 0.8))}


def _confidence_quality(raw: np.ndarray, conf: np.ndarray, ok: np.ndarray, seed: int) -> dict[str, ConfidenceQuality]:
    return {name: ConfidenceQuality(ece=_with_ci(lambda x, y: metrics.ece(x, y, 10), c, ok, seed=seed),
                                    brier=_with_ci(metrics.brier, c, ok, seed=seed),
                                    auroc=_with_ci(metrics.auroc, c, ok, seed=seed),
                                    bins=metrics.reliability_bins(c, ok, 10))
            for name, c in (("before", np.clip(raw, 0, 1)), ("after", conf))}


def _slices(test: dict[str, list[dict]], student: str, teacher: str, cascade_ok: np.ndarray,
            slice_of: dict[str, str]) -> list[Slice]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(test[student]):
        groups[slice_of.get(p["prompt_id"], "all")].append(i)
    rows = []
    for name, idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        s_ok, t_ok = ([preds[i]["correct"] for i in idx] for preds in (test[student], test[teacher]))
        rows.append(Slice(slice=name, n=len(idx), student=float(np.mean(s_ok)), teacher=float(np.mean(t_ok)),
                          cascade=float(cascade_ok[idx].mean())))
    return rows


def _chain(calib: dict[str, list[dict]], test: dict[str, list[dict]], models: list[str], conf_calib: np.ndarray,
           conf_test: np.ndarray, calibration: str, target_accuracy: float | None, prices: dict[str, float],
           seed: int) -> tuple[Row, dict]:
    """The student -> teacher 1 -> ... -> last teacher chain (teachers in the order given).

    Middle models route on their own calibrated top-option probability (the sequence probability
    of their generated answer on open-answer tasks)."""
    def arrays(part, key):
        return [np.array([p[key] for p in part[m]], dtype=float) for m in models]
    own = {m: "max_prob" if all("max_prob" in p["features"] for p in calib[m] + test[m]) else "seq_prob"
           for m in models[1:-1]}
    cals = [fit_calibrator(calibration, [p["features"][own[m]] for p in calib[m]], [p["correct"] for p in calib[m]])
            for m in models[1:-1]]
    confs = {"calib": [conf_calib], "test": [conf_test]}
    for cal, m in zip(cals, models[1:-1]):
        confs["calib"].append(cal.apply([p["features"][own[m]] for p in calib[m]]))
        confs["test"].append(cal.apply([p["features"][own[m]] for p in test[m]]))
    thresholds = fit_chain([a.astype(bool) for a in arrays(calib, "correct")], confs["calib"], arrays(calib, "tokens"),
                           target_accuracy)
    out = chain_outcome([a.astype(bool) for a in arrays(test, "correct")], confs["test"], arrays(test, "tokens"),
                        thresholds)
    n, tokens = out["correct"].size, arrays(test, "tokens")
    paid = [np.where(out["answered_by"] >= i, tokens[i], 0) for i in range(len(models))]
    acc, low, high = bootstrap_ci(np.mean, out["correct"].astype(float), seed=seed)
    row = Row(model="chain: " + " -> ".join(models), role="chain", accuracy=acc, ci_low=low, ci_high=high,
              teacher_share=float(out["beyond_first"]),
              teacher_tokens_per_1k=1000 * float(sum(p.sum() for p in paid[1:])) / n,
              tokens_per_1k=1000 * float(out["tokens"]) / n, n=n,
              cost_per_1k_usd=1000 * float(sum(_cost(p, m, prices).sum() for p, m in zip(paid, models))) / n)
    share = {m: float((out["answered_by"] == i).mean()) for i, m in enumerate(models)}
    return row, {"models": models, "thresholds": thresholds, "calibrators": [c.to_dict() for c in cals],
                 "answered_share": share}


def analyse(preds: dict[str, list[dict]], student: str, teachers: list[str], *, signal: str = "max_prob",
            calibration: str = "platt", target_accuracy: float | None = None,
            max_teacher_share: float | None = None, max_cost_per_1k: float | None = None,
            delta: float | None = None, prices: dict[str, float] | None = None,
            slice_of: dict[str, str] | None = None, seed: int = 0) -> CascadeResult:
    """The cascade result for predictions `preds[model]` (dicts from evals.scoring.answer_items)."""
    prices = prices or {}
    calib = {m: _by_split(preds[m], "calibration") for m in [student, *teachers]}
    test = {m: _by_split(preds[m], "test") for m in [student, *teachers]}
    for part in (calib, test):
        ids = [p["prompt_id"] for p in part[student]]
        if not ids or any([p["prompt_id"] for p in part[m]] != ids for m in teachers):
            raise ValueError("every model must answer the same non-empty calibration and test items")
    check_signal(signal, calib[student] + test[student])
    selection = None
    if signal == "auto":
        signal, selection = select_signal(calib[student], seed)
    raw_calib, raw_test, fitted = raw_confidence(signal, calib[student], test[student], seed)
    calibrator = fit_calibrator(calibration, raw_calib, [p["correct"] for p in calib[student]])
    conf_calib, conf_test = calibrator.apply(raw_calib), calibrator.apply(raw_test)

    s_cal = _answers(student, calib[student], conf_calib)
    t_cals = [_answers(t, calib[t]) for t in teachers]
    k = max(range(len(teachers)), key=lambda i: (t_cals[i].accuracy, -i))  # as evals.cascade.evaluate
    teacher = teachers[k]
    s_cost = _cost(s_cal.tokens, student, prices).sum()
    curve = [dict(p, cost_per_1k=1000 * (s_cost + _cost(np.array([p["teacher_tokens"]]), teacher, prices)[0])
                  / s_cal.n) for p in cascade_curve(s_cal, t_cals[k])]
    chosen = choose_threshold(curve, s_cal.n, target_accuracy=target_accuracy,
                              max_teacher_share=max_teacher_share, max_cost_per_1k=max_cost_per_1k, delta=delta,
                              batch_size=len(test[student]))  # the guarantee covers a batch the size of test

    s_test = _answers(student, test[student], conf_test)
    t_tests = [_answers(t, test[t]) for t in teachers]
    result = evaluate(s_cal, t_cals, s_test, t_tests, target_accuracy=target_accuracy,
                      max_teacher_share=max_teacher_share, seed=seed, threshold=chosen["threshold"])
    escalated = conf_test < chosen["threshold"]
    t_test = t_tests[k]
    cascade_ok = np.where(escalated, t_test.correct, s_test.correct)
    lat = {m: np.array([p["latency_s"] for p in test[m]]) for m in test}
    for row in result.rows:
        share = row.teacher_share
        if row.role == "teacher":
            m = row.model
            cost, latency = _cost(t_tests[teachers.index(m)].tokens, m, prices).mean(), lat[m].mean()
        else:  # the student runs on every query; teacher cost and latency on the escalated share
            esc = {"cascade": escalated, "oracle": ~s_test.correct & t_test.correct}.get(row.role)
            t_cost = _cost(t_test.tokens, teacher, prices)
            t_part = (t_cost[esc].sum() / s_test.n, lat[teacher][esc].sum() / s_test.n) if esc is not None \
                else (share * t_cost.mean(), share * lat[teacher].mean())
            cost = _cost(s_test.tokens, student, prices).mean() + t_part[0]
            latency = lat[student].mean() + t_part[1]
        row.cost_per_1k_usd, row.latency_per_1k_s = 1000 * float(cost), 1000 * float(latency)
    if len(teachers) > 1:
        chain_row, result.chain = _chain(calib, test, [student, *teachers], conf_calib, conf_test, calibration,
                                         target_accuracy, prices, seed)
        result.rows.append(chain_row)
    ok = s_test.correct.astype(float)
    student_answers = [p["answer"] for p in test[student]]
    same = np.array([a == p["answer"] for a, p in zip(student_answers, test[teacher])], dtype=float)
    result.fit.chosen, result.fit.delta = chosen, delta
    result.fit.max_cost_per_1k, result.fit.calibration_method = max_cost_per_1k, calibration
    result.signal, result.signal_selection, result.calibrator = signal, selection, calibrator.to_dict()
    result.learned_head = fitted.get("learned_head")
    result.curve_vs_random = _with_ci(metrics.curve_gain_over_random, s_test.correct, t_test.correct, conf_test,
                                      seed=seed)
    result.metric_cis = _routing_cis(s_test.correct, t_test.correct, conf_test, s_test.tokens, t_test.tokens, seed)
    result.confidence_quality = _confidence_quality(raw_test, conf_test, ok, seed)
    result.risk_coverage = metrics.risk_coverage(conf_test, ok)
    result.aurc = metrics.aurc(conf_test, ok)
    result.fidelity = Fidelity(teacher=teacher, answer_agreement=_with_ci(np.mean, same, seed=seed),
                               agreement_when_teacher_right=float(same[t_test.correct].mean())
                               if t_test.correct.any() else math.nan)
    result.slices = _slices(test, student, teacher, cascade_ok, slice_of or {})
    result.prices_per_1m_tokens = prices
    return result
