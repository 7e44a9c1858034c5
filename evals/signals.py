"""Confidence signals: how sure the student is, as a number in [0, 1] (higher = surer).

From one scoring pass over the options (multiple choice) or one generation:
- ``max_prob``: the top option's probability (softmax over summed option log-probs);
- ``margin``: top-1 minus top-2 option probability;
- ``seq_prob``: exp of the mean per-token log-prob of the answer (length-normalised, since
  the plain sequence log-prob penalises long answers; Gupta et al. 2024);
- ``token_q10``: exp of the 10th percentile of the answer's per-token log-probs (one
  unsure token flags the answer even when the mean looks fine);
- ``token_margin``: 1 - exp(-mean top-1/top-2 next-token margin over the answer tokens).
From several answers: ``agreement``, the share of k prompt variants (different few-shot
exemplars) giving the main answer. From a checker: ``verifier``, the share of verifiers
passed. ``learned``: a logistic-regression deferral head over all of the above, fitted on
the calibration split (scikit-learn; cross-fitted so the threshold is not chosen on the
head's own training predictions).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from core.errors import DistillError

SIGNALS = ("max_prob", "margin", "seq_prob", "token_q10", "token_margin", "agreement", "verifier", "learned")
# Signals a generation alone provides (what `distill serve --cascade` can compute per request).
GENERATION_SIGNALS = ("seq_prob", "token_q10", "token_margin")
# How options are scored (evals.scoring); kept here, beside SIGNALS, so the CLI can list the
# choices without importing the model stack.
PROMPT_STYLES = ("mc", "cloze")
DEBIAS = ("none", "content-free", "batch")
FEATURES = ("max_prob", "margin", "entropy", "seq_prob", "token_q10", "token_margin", "agreement", "verifier")


def token_features(token_logprobs: Sequence[float], top2_margins: Sequence[float]) -> dict:
    """seq_prob, token_q10 and token_margin of one answer's tokens."""
    lps = np.asarray(token_logprobs, dtype=float)
    margins = np.asarray(top2_margins, dtype=float)
    if lps.size == 0:
        return {"seq_prob": 0.0, "token_q10": 0.0, "token_margin": 0.0}
    return {"seq_prob": float(np.exp(lps.mean())),
            "token_q10": float(np.exp(np.quantile(lps, 0.1))),
            "token_margin": float(1 - np.exp(-margins.mean())) if margins.size else 0.0}


def option_logprobs(details: Sequence[dict]) -> np.ndarray:
    """Summed log-prob of each option's tokens."""
    return np.array([sum(d["token_logprobs"]) for d in details], dtype=float)


def label_prior(passes: Sequence[Sequence[dict]]) -> np.ndarray:
    """Log of the mean option distribution over several scoring passes.

    A small model's few-shot prompt favours some labels whatever the input; dividing by this
    prior removes that bias without labels. Over content-free inputs ("N/A", "", ...) it is
    contextual calibration (Zhao et al. 2021); over the calibration split's inputs it is batch
    calibration (Zhou et al. 2023).
    """
    probs = []
    for details in passes:
        lp = option_logprobs(details)
        p = np.exp(lp - lp.max())
        probs.append(p / p.sum())
    return np.log(np.clip(np.mean(probs, axis=0), 1e-12, None))


def choice_features(details: Sequence[dict], prior: Sequence[float] | None = None) -> dict:
    """Answer index, option probabilities and every signal of one option-scoring pass.

    `details` has one dict per option with its ``token_logprobs`` (and ``top2_margins``);
    `prior` (log-probs per option, e.g. `content_free_prior`) is divided out of the option
    distribution before the answer and its confidence are read.
    """
    if not details:
        raise ValueError("choice_features needs at least one option")
    sums = option_logprobs(details)
    if prior is not None:
        if len(prior) != len(sums):
            raise ValueError(f"prior has {len(prior)} values for {len(sums)} options")
        sums = sums - np.asarray(prior, dtype=float)
    probs = np.exp(sums - sums.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    best = int(order[0])
    second = float(probs[order[1]]) if len(probs) > 1 else 0.0
    entropy = float(-(probs * np.log(np.clip(probs, 1e-12, 1))).sum())
    chosen = details[best]
    return {"answer_index": best, "probs": probs.tolist(), "max_prob": float(probs[best]),
            "margin": float(probs[best]) - second,
            # 1 - normalised entropy, so it reads like the other signals (1 = certain).
            "entropy": 1 - entropy / math.log(len(probs)) if len(probs) > 1 else 1.0,
            **token_features(chosen["token_logprobs"], chosen.get("top2_margins", []))}


def agreement(main_answer: str, answers: Sequence[str]) -> float:
    """Share of `answers` (the k variants, main one included) equal to the main answer."""
    return sum(a == main_answer for a in answers) / len(answers) if answers else 0.0


def feature_matrix(features: Sequence[dict]) -> tuple[np.ndarray, list[str]]:
    """Items x available features (a feature missing from any item is left out)."""
    names = [f for f in FEATURES if all(f in item for item in features)]
    return np.array([[float(item[f]) for f in names] for item in features], dtype=float), names


class LearnedDeferral:
    """Logistic regression from signal features to P(student correct)."""

    def __init__(self, names: list[str], coef: list[float], intercept: float) -> None:
        self.names, self.coef, self.intercept = names, np.asarray(coef, dtype=float), float(intercept)

    def predict(self, features: Sequence[dict]) -> np.ndarray:
        x = np.array([[float(item[f]) for f in self.names] for item in features], dtype=float)
        return 1 / (1 + np.exp(-(x @ self.coef + self.intercept)))

    def to_dict(self) -> dict:
        return {"names": self.names, "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> LearnedDeferral:
        return cls(d["names"], d["coef"], d["intercept"])


def _fit_logreg(x: np.ndarray, y: np.ndarray, names: list[str]) -> LearnedDeferral:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():  # one class: a constant head
        return LearnedDeferral(names, [0.0] * len(names), 10.0 if y[0] else -10.0)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return LearnedDeferral(names, model.coef_[0].tolist(), float(model.intercept_[0]))


def fit_learned(features: Sequence[dict], correct: np.ndarray, folds: int = 5,
                seed: int = 0) -> tuple[LearnedDeferral, np.ndarray]:
    """The head fitted on all calibration items, and cross-fitted calibration predictions."""
    x, names = feature_matrix(features)
    y = np.asarray(correct, dtype=int)
    if not names:
        raise ValueError("the learned deferral head needs at least one confidence feature")
    head = _fit_logreg(x, y, names)
    out = np.empty(len(y))
    fold = np.random.default_rng(seed).permutation(len(y)) % max(2, min(folds, len(y)))
    for k in np.unique(fold):
        part = _fit_logreg(x[fold != k], y[fold != k], names)
        out[fold == k] = 1 / (1 + np.exp(-(x[fold == k] @ part.coef + part.intercept)))
    return head, out


def signal_values(features: Sequence[dict], signal: str) -> np.ndarray:
    """One raw confidence per item for a non-learned signal."""
    if signal not in SIGNALS or signal == "learned":
        raise ValueError(f"unknown signal {signal!r}: use one of {', '.join(SIGNALS)}")
    missing = [i for i, item in enumerate(features) if signal not in item]
    if missing:
        raise ValueError(f"signal {signal!r} is not available for these answers (item {missing[0]}): "
                         f"pick one of {', '.join(sorted(set(features[missing[0]]) & set(SIGNALS)))}")
    return np.array([float(item[signal]) for item in features], dtype=float)


def check_scoring_options(debias: str, style: str) -> None:
    """Refuse an unknown debias or prompt style before anything is scored or stored."""
    if debias not in DEBIAS:
        raise DistillError(f"unknown debias '{debias}': use one of {', '.join(DEBIAS)}")
    if style not in PROMPT_STYLES:
        raise DistillError(f"unknown prompt style '{style}': use one of {', '.join(PROMPT_STYLES)}")
