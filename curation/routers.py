"""Knowledge purification across teachers: rank them, route each prompt to one, or combine them.

Pure numpy/sklearn. Conventions: X is (n, d) prompt embeddings (curation.embed); Y is (n, T)
teacher correctness on the train split, 1.0 / 0.0, NaN where a teacher has no answer (an
optional boolean `mask`, True = observed, hides more). Every router has fit(X, Y, mask) and
scores(X) -> (n, T) estimated P(teacher correct | prompt), so combine_answers can use any of them.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


def _labels(Y, mask=None) -> np.ndarray:
    Y = np.array(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y must be (n, T), got shape {Y.shape}")
    if mask is not None:
        Y[~np.asarray(mask, dtype=bool)] = np.nan
    if np.any((Y[~np.isnan(Y)] != 0) & (Y[~np.isnan(Y)] != 1)):
        raise ValueError("Y must hold 0/1 correctness (NaN = no answer)")
    return Y


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _global_accuracy(Y: np.ndarray) -> np.ndarray:
    """Per-teacher accuracy on observed rows, Laplace-smoothed ((k + 1) / (n + 2))."""
    return (np.nansum(Y, axis=0) + 1) / ((~np.isnan(Y)).sum(axis=0) + 2)


# ---------------------------------------------------------------- Plackett-Luce ranking

def fit_plackett_luce(rankings: list[list[list[int]]], n_items: int, iters: int = 200,
                      prior: float = 0.1, tol: float = 1e-9) -> np.ndarray:
    """Plackett-Luce worths by MM (Hunter 2004, "MM algorithms for generalized Bradley-Terry models").

    Each ranking is a list of tie-groups, best first; items absent from a ranking were not
    compared in it (partial rankings). A group G picked from the items still left R contributes
    prod_{i in G} w_i / (sum_R w)^|G| (Breslow's tie rule); the last group is what remains and
    adds nothing. A Gamma(1 + prior, prior) prior keeps worths finite and positive for an item
    that always wins or always loses. Returns worths summing to 1, i.e. P(item ranked first).
    """
    stages, sizes, wins = [], [], np.zeros(n_items)
    for r in rankings:
        groups = [list(g) for g in r if len(g)]
        flat = [i for g in groups for i in g]
        if len(set(flat)) != len(flat) or any(not 0 <= i < n_items for i in flat):
            raise ValueError(f"bad ranking {r}: items must be distinct and in [0, {n_items})")
        for s, g in enumerate(groups[:-1]):
            row = np.zeros(n_items)
            row[[i for h in groups[s:] for i in h]] = 1.0
            stages.append(row)
            sizes.append(len(g))
            wins[g] += 1
    w = np.ones(n_items)
    if not stages:
        return w / n_items
    S, sizes = np.array(stages), np.array(sizes, dtype=float)
    for _ in range(iters):
        denom = S.T @ (sizes / (S @ w))  # sum over stages containing i of |G| / sum_R w
        new = (wins + prior) / (denom + prior)
        done = np.max(np.abs(new - w) / w) < tol
        w = new
        if done:
            break
    return w / w.sum()


def rankings_from_scores(scores) -> list[list[list[int]]]:
    """Per-row tie-groups, best first, from an (n, T) score matrix (judge scores or 0/1
    correctness; NaN = no answer, left out of that row's ranking). Equal scores tie."""
    out = []
    for row in np.asarray(scores, dtype=float):
        seen = np.flatnonzero(~np.isnan(row))
        out.append([[int(i) for i in seen[row[seen] == v]] for v in sorted(set(row[seen]), reverse=True)])
    return out


# ---------------------------------------------------------------- routers

class ClassifierRouter:
    """PLM-classifier router: one logistic regression per teacher on prompt embeddings predicts
    P(teacher correct | prompt). Unweighted classes keep probabilities calibrated (class_weight
    "balanced" would inflate weak teachers); C is picked per teacher by stratified CV log-loss."""

    def __init__(self, Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0), cv: int = 5, seed: int = 0):
        self.Cs, self.cv, self.seed = Cs, cv, seed

    def fit(self, X, Y, mask=None) -> ClassifierRouter:
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits
        Y = _labels(Y, mask)
        X = np.asarray(X, dtype=float)
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        self.models_, self.C_, self.prior_ = [], [], _global_accuracy(Y)
        with threadpool_limits(1):  # tiny fits: BLAS threads only add overhead
            for t in range(Y.shape[1]):
                self._fit_one(Z, Y[:, t])
        return self

    def _fit_one(self, Z: np.ndarray, yt: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        seen = ~np.isnan(yt)
        y = yt[seen].astype(int)
        minority = min(int(y.sum()), int(len(y) - y.sum()))
        if minority == 0:  # always right / always wrong / never answered: smoothed constant
            self.models_.append(None)
            self.C_.append(None)
            return
        C = self.Cs[len(self.Cs) // 2]
        if minority >= 2 and len(self.Cs) > 1:
            folds = StratifiedKFold(min(self.cv, minority), shuffle=True, random_state=self.seed)
            cv = [cross_val_score(LogisticRegression(C=c, max_iter=1000), Z[seen], y, cv=folds,
                                  scoring="neg_log_loss").mean() for c in self.Cs]
            C = self.Cs[int(np.argmax(cv))]
        self.models_.append(LogisticRegression(C=C, max_iter=1000).fit(Z[seen], y))
        self.C_.append(C)

    def predict_proba(self, X) -> np.ndarray:
        Z = self.scaler_.transform(np.asarray(X, dtype=float))
        return np.column_stack([np.full(len(Z), self.prior_[t]) if m is None else m.predict_proba(Z)[:, 1]
                                for t, m in enumerate(self.models_)])

    scores = predict_proba


class SimilarityRouter:
    """Similarity router: a teacher's accuracy on the k most cosine-similar train prompts,
    similarity-weighted and shrunk toward its global accuracy with `prior_strength` pseudo-neighbours."""

    def __init__(self, k: int = 10, prior_strength: float = 2.0):
        self.k, self.prior_strength = k, prior_strength

    def fit(self, X, Y, mask=None) -> SimilarityRouter:
        self.Y_ = _labels(Y, mask)
        self.X_ = _unit(X)
        self.prior_ = _global_accuracy(self.Y_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        sims = _unit(X) @ self.X_.T
        k = min(self.k, sims.shape[1])
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.clip(np.take_along_axis(sims, nn, axis=1), 0.0, None)[:, :, None]  # (n, k, 1)
        y = self.Y_[nn]  # (n, k, T)
        seen = ~np.isnan(y)
        hit = (w * np.where(seen, y, 0.0)).sum(axis=1)
        weight = (w * seen).sum(axis=1)
        m = self.prior_strength
        return (hit + m * self.prior_) / (weight + m)

    scores = predict_proba


class LinUCBSelector:
    """RL teacher selection as a contextual bandit: disjoint LinUCB (Li et al. 2010) streams over
    train prompts in a seeded order, picks a teacher by upper confidence bound on the context
    (PCA-reduced embedding + bias), sees only that teacher's reward (correct or not), updates.

    After fit: choices_, rewards_ (per step), regret_ (cumulative, vs the best fixed teacher in
    hindsight over the same stream; negative = routing beat it), oracle_regret_ (vs a correct
    teacher whenever one exists), random_regret_ (expected regret of uniform random picks).
    """

    def __init__(self, alpha: float = 1.0, ridge: float = 1.0, n_components: int | None = 32,
                 epochs: int = 1, seed: int = 0):
        self.alpha, self.ridge, self.n_components, self.epochs, self.seed = alpha, ridge, n_components, epochs, seed

    def _context(self, X) -> np.ndarray:
        Z = np.asarray(X, dtype=float)
        if self.pca_ is not None:
            Z = self.pca_.transform(Z)
        return np.hstack([Z, np.ones((len(Z), 1))])

    def fit(self, X, Y, mask=None) -> LinUCBSelector:
        Y = _labels(Y, mask)
        X = np.asarray(X, dtype=float)
        n, T = Y.shape
        self.pca_ = None
        dims = min(self.n_components or 0, n - 1, X.shape[1])
        if self.n_components and 1 <= dims < X.shape[1]:
            from sklearn.decomposition import PCA
            self.pca_ = PCA(dims, svd_solver="full").fit(X)
        C = self._context(X)
        d = C.shape[1]
        A_inv = np.repeat(np.eye(d)[None] / self.ridge, T, axis=0)  # (T, d, d), Sherman-Morrison updated
        b = np.zeros((T, d))
        rng = np.random.default_rng(self.seed)
        order = np.concatenate([rng.permutation(n) for _ in range(self.epochs)])
        avail_rows = ~np.isnan(Y)
        order = order[avail_rows[order].any(axis=1)]  # prompts no teacher answered teach nothing
        choices, rewards = np.zeros(len(order), int), np.zeros(len(order))
        for step, i in enumerate(order):
            x = C[i]
            theta = np.einsum("tde,te->td", A_inv, b)
            bonus = np.sqrt(np.einsum("d,tde,e->t", x, A_inv, x))
            ucb = np.where(avail_rows[i], theta @ x + self.alpha * bonus, -np.inf)
            best = np.flatnonzero(ucb >= ucb.max() - 1e-12)
            a = int(best[0] if len(best) == 1 else rng.choice(best))
            r = Y[i, a]
            Ax = A_inv[a] @ x
            A_inv[a] -= np.outer(Ax, Ax) / (1.0 + x @ Ax)
            b[a] += r * x
            choices[step], rewards[step] = a, r
        self.A_inv_, self.b_, self.theta_ = A_inv, b, np.einsum("tde,te->td", A_inv, b)
        self.order_, self.choices_, self.rewards_ = order, choices, rewards
        R = np.nan_to_num(Y[order], nan=0.0)  # an unanswered prompt scores 0 for that teacher
        self.best_fixed_teacher_ = int(np.argmax(R.sum(axis=0)))
        fixed = R[:, self.best_fixed_teacher_]
        self.regret_ = np.cumsum(fixed - rewards)
        self.oracle_regret_ = np.cumsum(R.max(axis=1) - rewards)
        self.random_regret_ = np.cumsum(fixed - np.nanmean(Y[order], axis=1))
        return self

    def scores(self, X) -> np.ndarray:
        """Greedy expected reward per teacher (no exploration bonus), clipped to [0, 1]."""
        return np.clip(self._context(X) @ self.theta_.T, 0.0, 1.0)

    predict_proba = scores


# ---------------------------------------------------------------- combining answers

class Choice(NamedTuple):
    teacher: int | None  # teacher whose trace to keep: the best-scored supporter of the answer
    answer: str | None
    support: float  # summed log-odds / scores of the answer's supporters (argmax: the teacher's score)
    supporters: tuple[int, ...]


MODES = ("weighted_vote", "score_sum", "majority", "argmax")


def combine_answers(answer_keys: list[list[str | None]], teacher_scores, mode: str = "weighted_vote",
                    n_wrong: float = 1.0, eps: float = 1e-3) -> list[Choice]:
    """Pick one answer (and the teacher to take it from) per prompt.

    answer_keys: per prompt, each teacher's canonical answer key (None = no answer).
    teacher_scores: (n, T) or (T,) per-teacher scores; NaN = ignore that teacher.
    weighted_vote: scores are P(correct); answer a wins by maximising
        sum_{t says a} log(p_t / (1 - p_t)) + log(n_wrong). This is the naive-Bayes posterior when
        each teacher is independently right with p_t and otherwise picks one of n_wrong equally likely
        wrong answers. n_wrong = 1 (binary tasks) gives plain log-odds: agreeing teachers with
        p < 0.5 count against an answer. For open-ended answers pass a larger n_wrong, e.g.
        estimate_n_wrong() on train. p is clipped to [eps, 1 - eps].
    score_sum: sum of raw supporter scores. majority: supporter count, score_sum breaks ties.
    argmax: the answer of the best-scored teacher that answered.
    Ties go to the answer whose best supporter scores highest, then the lowest teacher index.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}': use one of {MODES}")
    S = np.asarray(teacher_scores, dtype=float)
    n, T = len(answer_keys), (S.shape[-1] if S.ndim else 0)
    S = np.broadcast_to(S, (n, T)) if S.ndim == 1 else S
    if S.shape != (n, T) or any(len(k) != T for k in answer_keys):
        raise ValueError(f"answer_keys ({n} prompts) and teacher_scores {S.shape} disagree on shape")
    if mode == "weighted_vote":
        if np.any((S < 0) | (S > 1)):
            raise ValueError("weighted_vote needs P(correct) in [0, 1]; use mode='score_sum' for raw scores")
        p = np.clip(S, eps, 1 - eps)
        W = np.log(p / (1 - p)) + np.log(n_wrong)
    else:
        W = S
    return [_pick(keys, w, s, mode) for keys, w, s in zip(answer_keys, W, S)]


def _pick(keys: list[str | None], w: np.ndarray, s: np.ndarray, mode: str) -> Choice:
    groups: dict[str, list[int]] = {}
    for t, k in enumerate(keys):
        if k is not None and not np.isnan(s[t]):
            groups.setdefault(k, []).append(t)
    if not groups:
        return Choice(None, None, 0.0, ())
    best = {k: max(ts, key=lambda t: (s[t], -t)) for k, ts in groups.items()}  # best supporter per answer
    total = {k: float(w[ts].sum()) for k, ts in groups.items()}
    head = {"majority": lambda k: (len(groups[k]), total[k]), "argmax": lambda k: (s[best[k]],)}.get(
        mode, lambda k: (total[k],))
    answer = max(groups, key=lambda k: head(k) + (s[best[k]], -best[k]))
    support = {"argmax": float(s[best[answer]]), "majority": float(len(groups[answer]))}.get(mode, total[answer])
    return Choice(best[answer], answer, support, tuple(groups[answer]))


def estimate_n_wrong(answer_keys: list[list[str | None]], Y, mask=None) -> float:
    """n_wrong for weighted_vote from train: if wrong answers are spread over n_wrong equally
    likely keys, two wrong teachers agree with probability 1 / n_wrong. Laplace-smoothed, >= 1."""
    Y = _labels(Y, mask)
    agree = pairs = 0
    for keys, y in zip(answer_keys, Y):
        wrong = [keys[t] for t in range(len(keys)) if y[t] == 0 and keys[t] is not None]
        for i in range(len(wrong)):
            for j in range(i + 1, len(wrong)):
                pairs += 1
                agree += wrong[i] == wrong[j]
    return max(1.0, (pairs + 2) / (agree + 1))
