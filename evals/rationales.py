"""Rationale fidelity: how alike the student's and the teacher's explanations are.

The "generalization vs fidelity" paradox (a student can gain accuracy while agreeing less
with its teacher) needs more than answer agreement: two models can pick the same option
for different reasons. Each model explains the answer IT gave, from the same zero-shot
prompt, through the store's request cache (a re-run generates nothing); the similarity is
the cosine of the two explanations' MiniLM embeddings, reported overall and split by
whether the answers agree.
"""
from __future__ import annotations

import numpy as np

from curation.embed import embed_texts
from store.store import Store
from core.stats import bootstrap_ci
from prompts.rows import PromptRow
from prompts.templates import render_exact
from evals.results import RationaleExample, RationaleFidelity, SimilarityStat
from engine.jobs import GenParams, Job, model_key, request_key
from engine.engine import run_requests
from clients.teachers import Teacher

RATIONALE_PARAMS = GenParams(max_new_tokens=48, stop=("\n",))
# The prompt ends inside the explanation: a base model asked for "Explanation:" often ends
# the line at once (an empty rationale); starting the sentence for it does not.
OPENER = "Because"


def rationale_prompt(row: PromptRow, answer: str) -> str:
    """The same text for every model, so differences come from the model, not the prompt."""
    return render_exact("eval_rationale.j2", row=row, answer=answer, opener=OPENER)


def explain(store: Store, model: Teacher, rows: list[PromptRow], answers: list[str], run_id: str) -> list[str]:
    """One explanation per (row, answer), generated once and cached in the store."""
    jobs = [Job(prompt_id=r.id, rendered=rationale_prompt(r, a)) for r, a in zip(rows, answers)]
    done = run_requests(store, model, jobs, RATIONALE_PARAMS, purpose="eval-rationale", run_id=run_id,
                        label=f"rationales {model.name.rsplit('/', 1)[-1]}")
    texts = [(done[request_key(model_key(model), j.rendered, RATIONALE_PARAMS, 0)]["response"] or "").strip()
             for j in jobs]
    return [f"{OPENER} {t}" if t else "" for t in texts]


def _mean_ci(values: np.ndarray, seed: int) -> SimilarityStat:
    if values.size == 0:
        return SimilarityStat()
    value, low, high = bootstrap_ci(np.mean, values, n=500, seed=seed)
    return SimilarityStat(value, low, high, n=int(values.size))


def rationale_fidelity(store: Store, student: Teacher, teacher: Teacher, rows: list[PromptRow],
                       student_answers: list[str], teacher_answers: list[str], run_id: str,
                       seed: int = 0, examples: int = 3) -> RationaleFidelity:
    """Cosine similarity of the two models' explanations (MiniLM), with bootstrap CIs."""
    s_text = explain(store, student, rows, student_answers, run_id)
    t_text = explain(store, teacher, rows, teacher_answers, run_id)
    s_vec, t_vec = embed_texts(s_text), embed_texts(t_text)  # L2-normalised: the dot is the cosine
    # An empty explanation has no meaning to compare: it scores 0 rather than a spurious cosine.
    sims = np.where([bool(a and b) for a, b in zip(s_text, t_text)], (s_vec * t_vec).sum(axis=1), 0.0)
    same = np.array([a == b for a, b in zip(student_answers, teacher_answers)], dtype=bool)
    return RationaleFidelity(
        model="all-minilm-l6-v2", n=len(rows), teacher=teacher.name,
        similarity=_mean_ci(sims, seed),
        when_answers_agree=_mean_ci(sims[same], seed),
        when_answers_differ=_mean_ci(sims[~same], seed),
        empty_explanations={"student": sum(not t for t in s_text), "teacher": sum(not t for t in t_text)},
        examples=[RationaleExample(input=r.input[:300], student_answer=sa, student=st, teacher_answer=ta, teacher=tt,
                                   similarity=float(sim))
                  for r, sa, st, ta, tt, sim in list(zip(rows, student_answers, s_text, teacher_answers,
                                                         t_text, sims))[:examples]])
