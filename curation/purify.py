"""Knowledge purification across teachers: pick, per prompt, the answer (and trace) to keep.

Methods (`METHODS`), after "Exploring Knowledge Purification in Multi-Teacher Knowledge
Distillation for LLMs" (which finds the router-based methods generalise best):

    verified_first     a trace that passed the gold verifier, then consensus, then shortest
                       (needs gold: the default for curating labelled training data)
    majority           self-consistency vote over every sample's final answer
    plackett_luce      vote weighted by each teacher's Plackett-Luce worth, fitted from per-prompt
                       rankings on the fit split (judge scores when present, else verdicts)
    classifier_router  logistic regression on prompt embeddings predicts P(teacher right); a
                       log-odds weighted vote of the teachers' answers
    similarity_router  the same with P from the nearest fit-split prompts' teacher accuracy
    bandit             a LinUCB contextual bandit learns on the fit split which teacher to trust;
                       the selected teacher's answer is taken
    llm_aggregate      a teacher fuses the candidates' rationales into one (curation/aggregate.py)

Only fit-split verdicts (train by default) are used to learn; on other splits the methods see
no gold. Each purified row records its provenance: candidates, teachers, support, scores.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from curation.math_answers import answer_key
from store.store import Store
from curation.verify import VERIFIER
from core.errors import DistillError

METHOD = "verified_first"
METHODS = ("verified_first", "majority", "plackett_luce", "classifier_router", "similarity_router", "bandit",
           "llm_aggregate")  # the keys of PICKERS (below), then llm_aggregate


@dataclass
class Candidates:
    """A pool's kept traces grouped by prompt, with each teacher's self-consistent answer."""

    by_prompt: dict[str, list[dict]]
    split: dict[str, str]
    inputs: dict[str, str]
    teachers: list[str]

    def teacher_answers(self, prompt_id: str) -> list[str | None]:
        """Per teacher, the answer key most of its samples give (None: no answer)."""
        out = []
        for t in self.teachers:
            keys = [c["key"] for c in self.by_prompt[prompt_id] if c["teacher"] == t and c["key"] is not None]
            out.append(Counter(keys).most_common(1)[0][0] if keys else None)
        return out

    def shares(self, prompt_id: str) -> dict[str, np.ndarray]:
        """answer key -> (T,) share of each teacher's answered samples that give it."""
        out: dict[str, np.ndarray] = {}
        for j, t in enumerate(self.teachers):
            keys = [c["key"] for c in self.by_prompt[prompt_id] if c["teacher"] == t and c["key"] is not None]
            for k in keys:
                out.setdefault(k, np.zeros(len(self.teachers)))[j] += 1 / len(keys)
        return out

    def judge_scores(self, prompt_ids: list[str]) -> np.ndarray:
        """(n, T) mean judge score of each teacher's samples (NaN where none was judged)."""
        y = np.full((len(prompt_ids), len(self.teachers)), np.nan)
        col = {t: j for j, t in enumerate(self.teachers)}
        for i, p in enumerate(prompt_ids):
            for t in self.teachers:
                v = [c["judge_score"] for c in self.by_prompt[p] if c["teacher"] == t and c.get("judge_score") is not None]
                if v:
                    y[i, col[t]] = float(np.mean(v))
        return y

    def correctness(self, prompt_ids: list[str]) -> np.ndarray:
        """(n, T) 1/0: is the teacher's self-consistent answer right? NaN: no answer or no verdict."""
        y = np.full((len(prompt_ids), len(self.teachers)), np.nan)
        for i, p in enumerate(prompt_ids):
            for j, key in enumerate(self.teacher_answers(p)):
                v = [c["passed"] for c in self.by_prompt[p] if c["key"] == key and c["passed"] is not None]
                if key is not None and v:
                    y[i, j] = float(any(v))
        return y


def _answer_key(sample: dict) -> str | None:
    """What votes compare. A multiple-choice answer is already one of the options (synth.cot matched it):
    compare it as text; `answer_key` is for math and yes/no, and finds no key in a word like "osmosis"."""
    if sample["answer"] is None:
        return None
    if sample.get("choices"):
        return " ".join(str(sample["answer"]).lower().split()) or None
    return answer_key(sample["answer"])


def load_candidates(store: Store, pool: str, verifier: str = VERIFIER, kinds: tuple[str, ...] = ("cot",)) -> Candidates:
    by_prompt: dict[str, list[dict]] = {}
    split, inputs = {}, {}
    for s in store.curated_samples(pool, verifier, list(kinds)):
        if not s["kept"]:
            continue
        s["key"] = _answer_key(s)
        by_prompt.setdefault(s["prompt_id"], []).append(s)
        split[s["prompt_id"]], inputs[s["prompt_id"]] = s["split"], s["input"]
    teachers = sorted({c["teacher"] for cs in by_prompt.values() for c in cs})
    return Candidates(by_prompt, split, inputs, teachers)


def teacher_scores(cands: Candidates, method: str, fit: list[str], target: list[str], seed: int = 0) -> np.ndarray:
    """(len(target), T) how much to trust each teacher on each target prompt, learned on `fit`."""
    from curation import routers

    y = cands.correctness(fit)
    if np.isnan(y).all():
        raise DistillError(f"{method} learns from verdicts on the fit split and there are none: run "
                           "`distill curate` (verify) on a pool with gold answers in its train split first")
    if method == "plackett_luce":  # rankings from judge scores where a judge ran, else from verdicts
        judged = cands.judge_scores(fit)
        ranked = judged if not np.isnan(judged).all() else y
        worth = routers.fit_plackett_luce(routers.rankings_from_scores(ranked), len(cands.teachers))
        return np.tile(worth / worth.sum(), (len(target), 1))
    from curation.embed import embed_texts

    x_fit = embed_texts([cands.inputs[p] for p in fit])
    x_target = embed_texts([cands.inputs[p] for p in target])
    if method == "classifier_router":
        return routers.ClassifierRouter().fit(x_fit, y).predict_proba(x_target)
    if method == "similarity_router":
        return routers.SimilarityRouter().fit(x_fit, y).predict_proba(x_target)
    if method == "bandit":
        return routers.LinUCBSelector(seed=seed).fit(x_fit, y).scores(x_target)
    raise DistillError(f"unknown purification method {method!r}: choose from {', '.join(METHODS)}")


def _representative(members: list[dict], use_gold: bool) -> dict:
    """The trace to keep for a chosen answer: verified (where gold may be used), judged best, shortest."""
    return min(members, key=lambda c: ((use_gold and not c["passed"]), -(c.get("judge_score") or 0.0),
                                       len(c["reasoning"] or ""), c["id"]))


def _sample_vote(shares: dict[str, np.ndarray], weights: np.ndarray) -> tuple[str | None, dict[str, float]]:
    """The answer with the largest sum over teachers of weight x share of that teacher's samples.

    Sample-level, not one answer per teacher: a teacher split 2-1 between two answers lends
    both some support, so agreeing weaker teachers can tip its close calls.
    """
    tally = {k: float(share @ weights) for k, share in shares.items()}
    if not tally:
        return None, tally
    return max(sorted(tally), key=lambda k: tally[k]), tally


@dataclass
class PromptView:
    """What a picker sees of one prompt: its answered samples, their votes, each teacher's answer and,
    for the learned methods, each teacher's fitted score on this prompt."""

    cands: Candidates
    prompt_id: str
    members: list[dict]
    use_gold: bool
    scores: np.ndarray | None
    n_wrong: float

    @cached_property
    def votes(self) -> Counter:
        return Counter(c["key"] for c in self.members)

    @cached_property
    def answers(self) -> list[str | None]:
        return self.cands.teacher_answers(self.prompt_id)


def _verified_first(v: PromptView) -> tuple[str, dict]:
    votes = v.votes
    return min(v.members, key=lambda c: ((v.use_gold and not c["passed"]), -votes[c["key"]],
                                         len(c["reasoning"] or ""), c["id"]))["key"], {}


def _majority(v: PromptView) -> tuple[str, dict]:
    votes = v.votes
    return max(sorted(votes), key=lambda k: votes[k]), {"votes": dict(votes)}


def _bandit(v: PromptView) -> tuple[str, dict]:
    """The selected teacher's own (self-consistent) answer."""
    answers = v.answers
    j = next(j for j in np.argsort(-v.scores, kind="stable") if answers[j] is not None)
    return answers[j], {"selected_teacher": v.cands.teachers[j]}


def _weighted_vote(weights: np.ndarray, v: PromptView) -> tuple[str, dict]:
    key, tally = _sample_vote(v.cands.shares(v.prompt_id), weights)
    return key, {"tally": {k: round(t, 4) for k, t in tally.items()}}


def _plackett_luce(v: PromptView) -> tuple[str, dict]:
    return _weighted_vote(v.scores, v)


def _router(v: PromptView) -> tuple[str, dict]:
    """Naive-Bayes log-odds of P(teacher right on this prompt), see routers.combine_answers."""
    p_right = np.clip(v.scores, 0.02, 0.98)
    return _weighted_vote(np.log(p_right / (1 - p_right)) + np.log(v.n_wrong), v)


# One entry per method that picks among the stored candidates (llm_aggregate writes a new trace
# instead: curation/aggregate.py). LEARNED methods first fit per-teacher scores on the fit split.
PICKERS = {"verified_first": _verified_first, "majority": _majority, "plackett_luce": _plackett_luce,
           "classifier_router": _router, "similarity_router": _router, "bandit": _bandit}
LEARNED = ("plackett_luce", "classifier_router", "similarity_router", "bandit")


def choose(cands: Candidates, method: str, target: list[str], fit: list[str], gold_splits: tuple[str, ...]) -> list[dict]:
    """One purified row (without run id) per target prompt that has any answer."""
    from curation.routers import estimate_n_wrong

    scores, n_wrong = None, 1.0
    if method in LEARNED:
        scores = teacher_scores(cands, method, fit, target)
        # Wrong answers to open questions rarely coincide, so agreement is evidence: n_wrong says
        # how much (1 for yes/no, ~3-4 on CHAMP), estimated from the fit split's wrong answers.
        n_wrong = estimate_n_wrong([cands.teacher_answers(p) for p in fit], cands.correctness(fit))
    rows = []
    for i, p in enumerate(target):
        members = [c for c in cands.by_prompt[p] if c["key"] is not None]
        if not members:
            continue
        use_gold = cands.split[p] in gold_splits
        view = PromptView(cands, p, members, use_gold, None if scores is None else scores[i], n_wrong)
        key, extra = PICKERS[method](view)
        detail: dict = {"candidates": len(members), "teachers": sorted({c["teacher"] for c in members}),
                        "agreement": teacher_agreement(view.answers), **extra}
        if scores is not None:
            detail["scores"] = {t: round(float(v), 4) for t, v in zip(cands.teachers, scores[i])}
        pick = _representative([c for c in members if c["key"] == key], use_gold)
        detail.update(answer_key=key, support=sorted({c["teacher"] for c in members if c["key"] == key}),
                      chosen_teacher=pick["teacher"], verified=pick["passed"])
        rows.append(dict(prompt_id=p, method=method, sample_id=pick["id"], detail=detail))
    return rows


def teacher_agreement(answers: list[str | None]) -> float | None:
    """Share of teacher pairs (both answering) that give the same answer."""
    given = [a for a in answers if a is not None]
    pairs = [(a, b) for i, a in enumerate(given) for b in given[i + 1:]]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def purify(store: Store, pool: str, run_id: str, method: str = METHOD, *, fit_split: str = "train",
           splits: tuple[str, ...] = ("train",), require_verified: bool = True, verifier: str = VERIFIER,
           gold_splits: tuple[str, ...] = ("train",), candidates: Candidates | None = None, **options) -> dict:
    """Write one purified row per prompt of `splits`; returns counts and provenance totals."""
    if method not in METHODS:
        raise DistillError(f"unknown purification method {method!r}: choose from {', '.join(METHODS)}")
    cands = candidates or load_candidates(store, pool, verifier)
    fit = sorted(p for p, sp in cands.split.items() if sp == fit_split)
    target = sorted(p for p, sp in cands.split.items() if sp in splits)
    if method == "llm_aggregate":
        from curation.aggregate import aggregate

        rows = aggregate(store, pool, cands, target, run_id, verifier=verifier, **options)
    else:
        rows = choose(cands, method, target, fit, gold_splits)
    if require_verified:  # a wrong rationale teaches the student wrong: drop known-wrong picks
        rows = [r for r in rows if not (cands.split[r["prompt_id"]] in gold_splits and r["detail"]["verified"] is False)]
    store.replace_purified(method, [dict(r, run_id=run_id) for r in rows], [p for p in target])
    teachers = Counter(r["detail"]["chosen_teacher"] for r in rows)
    return {"method": method, "prompts": len(target), "selected": len(rows), "by_teacher": dict(teachers)}


def select_traces(store: Store, pool: str, run_id: str, require_verified: bool = True) -> dict:
    """Verifier-first selection on the train split (what the demo trains on)."""
    out = purify(store, pool, run_id, METHOD, require_verified=require_verified)
    return {"prompts_with_traces": out["prompts"], "selected": out["selected"], "by_teacher": out["by_teacher"]}
