"""Critiques, revisions and judge scores over stored traces.

- `critique_traces`: a critic teacher reviews each trace (sample kind "critique", parent = trace).
- `revise_traces`: a reviser rewrites each critiqued trace (kind "revision", parent = critique),
  parsed like any trace so it can be verified, selected and paired.
- `judge_traces`: UltraFeedback-style 1-5 scores on four aspects, written as verdicts
  (`judge:<model>`); an unparseable rating is kept as a verdict with its error.
- `judge_pairs`: pairwise preference asked twice with the responses swapped; only an
  order-consistent preference becomes a pair (position bias cancels out).
All calls go through the request cache, so re-runs are free and resumable.
"""
from __future__ import annotations

import json
import math
import re

from store.store import Store
from prompts.rows import student_row
from prompts.templates import render, template_hash
from synth.cot import STOP, parse_trace
from engine.jobs import GenParams, Job, keys_for, model_key
from engine.engine import run_requests
from clients.types import Generation
from store.records import TRACE_KINDS, make_pair
from clients.teachers import Teacher

ASPECTS = ("helpfulness", "honesty", "instruction following", "truthfulness")
VERDICT_RE = re.compile(r"verdict\s*:\s*(correct|incorrect)", re.IGNORECASE)


def _render(teacher: Teacher, template: str, prefill: str, **variables: object) -> tuple[str, str]:
    text = render(template, **variables)
    if teacher.is_chat:
        return teacher.render([{"role": "user", "content": text}]) + prefill, template_hash(template)
    return f"{text}\n{prefill}", template_hash(template)


def _train_samples(store: Store, pool: str, kinds: tuple[str, ...], limit: int | None) -> list[dict]:
    rows = [s for s in store.scored_samples(pool, kinds, "none") if s["split"] == "train"]
    return rows[:limit] if limit else rows


def _run(store: Store, teacher: Teacher, jobs: list[tuple[Job, dict]], params: GenParams, purpose: str,
         run_id: str, make_sample) -> dict:
    by_key: dict[str, dict] = {}

    def postprocess(job: Job, _i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        parent = by_key[job.rendered]
        sample = make_sample(parent, gen, key)
        return {}, ([sample] if sample else [])

    for job, parent in jobs:
        by_key[job.rendered] = parent
    done = run_requests(store, teacher, [j for j, _ in jobs], params, purpose=purpose, run_id=run_id,
                        postprocess=postprocess, label=f"{purpose} {teacher.name}")
    return {"inputs": len(jobs), "requests": len(done)}


def critique_traces(store: Store, critic: Teacher, pool: str, run_id: str, max_new_tokens: int = 96,
                    limit: int | None = None) -> dict:
    jobs = []
    for s in _train_samples(store, pool, ("cot",), limit):
        rendered, t_hash = _render(critic, "critique.j2", "Critique:", row=student_row(s), reasoning=s["reasoning"] or "",
                                   answer=s["answer"] or "(none)")
        jobs.append((Job(prompt_id=s["prompt_id"], rendered=rendered, template_hash=t_hash), s))

    def make(parent: dict, gen: Generation, key: str) -> dict:
        verdict = VERDICT_RE.search(gen.text)
        return dict(id="s" + key[:23], prompt_id=parent["prompt_id"], request_key=key, teacher=critic.name,
                    kind="critique", reasoning=gen.text.strip(), answer=verdict.group(1).lower() if verdict else None,
                    parse_error=None if verdict else "no 'Verdict:' line", parent_id=parent["id"])
    return _run(store, critic, jobs, GenParams(max_new_tokens=max_new_tokens, stop=STOP), "critique", run_id, make)


def revise_traces(store: Store, reviser: Teacher, pool: str, run_id: str, max_new_tokens: int = 96,
                  limit: int | None = None) -> dict:
    critiques = _train_samples(store, pool, ("critique",), limit)
    traces = store.samples_by_id([c["parent_id"] for c in critiques])
    jobs = []
    for c in critiques:
        trace = traces[c["parent_id"]]
        rendered, t_hash = _render(reviser, "revise.j2", "Reasoning:", row=student_row(trace), reasoning=trace["reasoning"] or "",
                                   answer=trace["answer"] or "(none)", critique=c["reasoning"] or "")
        jobs.append((Job(prompt_id=c["prompt_id"], rendered=rendered, template_hash=t_hash), dict(c, choices=trace["choices"])))

    def make(parent: dict, gen: Generation, key: str) -> dict:
        choices = json.loads(parent["choices"]) if parent["choices"] else None
        reasoning, answer, error = parse_trace(gen.text, choices)
        return dict(id="s" + key[:23], prompt_id=parent["prompt_id"], request_key=key, teacher=reviser.name,
                    kind="revision", reasoning=reasoning, answer=answer, parse_error=error, parent_id=parent["id"])
    return _run(store, reviser, jobs, GenParams(max_new_tokens=max_new_tokens, stop=STOP), "revision", run_id, make)


def parse_ratings(text: str) -> dict[str, int] | None:
    """Aspect → 1..5 from "Aspect: N" lines or a JSON object; None when any aspect is missing."""
    found: dict[str, int] = {}
    try:
        obj = json.loads(text[text.index("{"):text.rindex("}") + 1])
        found = {k.lower().replace("_", " "): int(v) for k, v in obj.items() if str(v).strip().isdigit()}
    except (ValueError, AttributeError):
        for aspect in ASPECTS:
            m = re.search(rf"{aspect}\s*:\s*([1-5])", text, re.IGNORECASE)
            if m:
                found[aspect] = int(m.group(1))
    if all(a in found and 1 <= found[a] <= 5 for a in ASPECTS):
        return {a: found[a] for a in ASPECTS}
    return None


def judge_traces(store: Store, judge: Teacher, pool: str, run_id: str, max_new_tokens: int = 40,
                 limit: int | None = None) -> dict:
    samples = _train_samples(store, pool, TRACE_KINDS, limit)
    jobs = []
    for s in samples:
        rendered, t_hash = _render(judge, "judge.j2", "Helpfulness:", row=student_row(s), reasoning=s["reasoning"] or "",
                                   answer=s["answer"] or "(none)")
        jobs.append((Job(prompt_id=s["prompt_id"], rendered=rendered, template_hash=t_hash), s))
    params = GenParams(max_new_tokens=max_new_tokens, stop=STOP)
    _run(store, judge, jobs, params, "judge", run_id, lambda *_: None)
    requests = store.finished_requests([keys_for(model_key(judge), j, params)[0] for j, _ in jobs])
    verdicts, failed = [], 0
    for job, s in jobs:
        req = requests.get(keys_for(model_key(judge), job, params)[0])
        if req is None:
            continue
        ratings = parse_ratings("Helpfulness:" + req["response"])
        failed += ratings is None
        score = sum(ratings.values()) / (5 * len(ratings)) if ratings else None
        verdicts.append(dict(sample_id=s["id"], verifier=f"judge:{judge.name}", verifier_version=template_hash("judge.j2"),
                             passed=None if score is None else score >= 0.6, score=score,
                             detail=json.dumps(ratings) if ratings else f"unparseable rating: {req['response'][:120]!r}",
                             run_id=run_id))
    store.add_verdicts(verdicts)
    return {"judged": len(verdicts), "unparseable": failed}


def judge_pairs(store: Store, judge: Teacher, pool: str, run_id: str, limit: int | None = None) -> dict:
    """Position-swapped pairwise judging of the first two answered traces of each train prompt."""
    by_prompt: dict[str, list[dict]] = {}
    for s in _train_samples(store, pool, TRACE_KINDS, None):
        if s["answer"] is not None:
            by_prompt.setdefault(s["prompt_id"], []).append(s)
    groups = [g[:2] for g in by_prompt.values() if len(g) >= 2][:limit]
    probs: dict[tuple[str, str], float] = {}

    def ask(first: dict, second: dict) -> tuple[Job, tuple[dict, dict]]:
        rendered, t_hash = _render(judge, "judge_pair.j2", "Better response:", row=student_row(first), first=first, second=second)
        return Job(prompt_id=first["prompt_id"], rendered=rendered, template_hash=t_hash), (first, second)

    asks = [ask(a, b) for a, b in groups] + [ask(b, a) for a, b in groups]

    def postprocess(job: Job, _i: int, gen: Generation, _key: str) -> tuple[dict, list[dict]]:
        # P("A") from the judge's own distribution over the two letters (text is kept as well).
        a, b = judge.score_continuations(job.rendered, [" A", " B"])
        return {"p_first": 1.0 / (1.0 + math.exp(b - a))}, []

    params = GenParams(max_new_tokens=4)
    done = run_requests(store, judge, [j for j, _ in asks], params, purpose="judge_pair", run_id=run_id,
                        postprocess=postprocess, label=f"judge pairs {judge.name}")
    for job, (first, second) in asks:
        extra = done[keys_for(model_key(judge), job, params)[0]]["extra"]
        probs[(first["id"], second["id"])] = json.loads(extra)["p_first"] if isinstance(extra, str) else extra["p_first"]
    rows = []
    for a, b in groups:
        p_a = (probs[(a["id"], b["id"])] + (1.0 - probs[(b["id"], a["id"])])) / 2
        consistent = (probs[(a["id"], b["id"])] > 0.5) == (probs[(b["id"], a["id"])] < 0.5)
        if consistent and p_a != 0.5:
            chosen, rejected = (a, b) if p_a > 0.5 else (b, a)
            rows.append(make_pair(a["prompt_id"], chosen, rejected, "judge_pairwise", abs(p_a - 0.5) * 2, run_id))
    store.replace_pairs("judge_pairwise", pool, rows)
    return {"compared": len(groups), "consistent_pairs": len(rows)}
