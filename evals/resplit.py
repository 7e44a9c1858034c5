"""Does an accuracy target set on calibration data hold on unseen data? Re-split and count.

The calibration and test items are pooled and split at random in two halves `n` times;
each time the signal, calibrator and threshold are fitted on one half exactly as the main
evaluation does and the cascade is scored on the other. The hold rate is the share of
re-splits whose test accuracy meets the target. With a Learn-then-Test `delta`, theory
says the rate should be at least 1 - delta (up to the test half's own sampling noise).
"""
from __future__ import annotations

import numpy as np

from evals.analysis import raw_confidence, select_signal
from evals.calibrate import choose_threshold, fit_calibrator
from evals.cascade import ModelAnswers, cascade_curve, cascade_outcome
from evals.results import ResplitRun, Resplits


def _answers(part: list[dict], conf: np.ndarray | None = None) -> ModelAnswers:
    return ModelAnswers("m", np.array([p["correct"] for p in part], dtype=bool),
                        np.array([p["tokens"] for p in part], dtype=int), conf)


def resplit_hold_rate(student: list[dict], teacher: list[dict], target_accuracy: float, *, signal: str = "max_prob",
                      calibration: str = "platt", delta: float | None = 0.1, n: int = 20, seed: int = 0) -> Resplits:
    """Hold rate of `target_accuracy` over `n` random 50/50 re-splits of the pooled items.

    `student` and `teacher` are per-item predictions (evals.scoring.answer_items) aligned by
    prompt id over the calibration and test splits.
    """
    by_id = {p["prompt_id"]: p for p in teacher}
    student = sorted((p for p in student if p["split"] != "train"), key=lambda p: p["prompt_id"])
    teacher = [by_id[p["prompt_id"]] for p in student]
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(n):
        order = rng.permutation(len(student))
        half = len(order) // 2
        cal, tst = order[:half], order[half:]
        s_cal, s_tst = [student[i] for i in cal], [student[i] for i in tst]
        used = select_signal(s_cal, seed + r)[0] if signal == "auto" else signal  # chosen on this half only
        raw_cal, raw_tst, _ = raw_confidence(used, s_cal, s_tst, seed + r)
        calibrator = fit_calibrator(calibration, raw_cal, [p["correct"] for p in s_cal])
        s_c = _answers(s_cal, calibrator.apply(raw_cal))
        t_c = _answers([teacher[i] for i in cal])
        curve = [dict(p, cost_per_1k=p["tokens"] * 1000 / s_c.n) for p in cascade_curve(s_c, t_c)]
        chosen = choose_threshold(curve, s_c.n, target_accuracy=target_accuracy, delta=delta, batch_size=len(tst))
        out = cascade_outcome(_answers(s_tst, calibrator.apply(raw_tst)), _answers([teacher[i] for i in tst]),
                              chosen["threshold"])
        runs.append(ResplitRun(signal=used, test_accuracy=out["accuracy"], teacher_share=out["teacher_share"],
                               calib_accuracy=float(chosen["accuracy"]), reached_on_calibration=chosen["reached"],
                               held=out["accuracy"] >= target_accuracy - 1e-12))
    hits = sum(r.held for r in runs)
    return Resplits(target_accuracy=target_accuracy, delta=delta, signal=signal, calibration=calibration, n=n,
                    hits=hits, rate=hits / n, mean_teacher_share=float(np.mean([r.teacher_share for r in runs])),
                    runs=runs)
