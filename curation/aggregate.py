"""LLM aggregation: a teacher fuses several teachers' rationales into one, which is re-verified.

One solution per distinct answer (each teacher's self-consistent answer, its shortest trace)
goes into prompts/templates/aggregate.j2; the fused output is parsed like any trace and stored
as a sample of kind "aggregate" (parent = the first source), so it is cached, resumable,
verified and exported like the rest. Its provenance (the source sample ids) is in the row.
"""
from __future__ import annotations

import json

from prompts.rows import student_row
from store.store import Store
from curation.verify import VERIFIER, verify
from prompts.templates import render, template_hash, template_source
from synth.cot import STOP, parse_trace
from engine.jobs import GenParams, Job, keys_for, model_key
from engine.engine import run_requests
from clients.types import Generation
from clients.teachers import Teacher, get_teacher

TEMPLATE = "aggregate.j2"


def _sources(cands, prompt_id: str, max_solutions: int) -> list[dict]:
    by_answer: dict[str, dict] = {}
    for c in sorted(cands.by_prompt[prompt_id], key=lambda c: (len(c["reasoning"] or ""), c["id"])):
        if c["key"] is not None and c["key"] not in by_answer:
            by_answer[c["key"]] = c
    return list(by_answer.values())[:max_solutions]


def aggregate(store: Store, pool: str, cands, target: list[str], run_id: str, *, aggregator: Teacher | str,
              verifier: str = VERIFIER, max_new_tokens: int = 384, max_solutions: int = 4) -> list[dict]:
    """Purified rows whose sample is the aggregator's fused trace, one per target prompt."""
    teacher = get_teacher(aggregator) if isinstance(aggregator, str) else aggregator
    store.add_template(TEMPLATE, template_source(TEMPLATE), template_hash(TEMPLATE))
    jobs, sources = [], {}
    for p in target:
        src = _sources(cands, p, max_solutions)
        if not src:
            continue
        text = render(TEMPLATE, row=student_row(dict(src[0], prompt_id=p)), solutions=src)
        rendered = teacher.render([{"role": "user", "content": text}]) + "Reasoning:" if teacher.is_chat \
            else f"{text}\nReasoning:"
        jobs.append(Job(prompt_id=p, rendered=rendered, template_hash=template_hash(TEMPLATE)))
        sources[rendered] = src
    choices = {p: json.loads(src[0]["choices"]) if src[0].get("choices") else None
               for p, src in ((j.prompt_id, sources[j.rendered]) for j in jobs)}

    def postprocess(job: Job, _i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        reasoning, answer, error = parse_trace(gen.text, choices[job.prompt_id])
        src = sources[job.rendered]
        sample = dict(id="s" + key[:23], prompt_id=job.prompt_id, request_key=key, teacher=teacher.name,
                      kind="aggregate", reasoning=reasoning, answer=answer, parse_error=error, parent_id=src[0]["id"])
        return {"sources": [s["id"] for s in src]}, [sample]

    params = GenParams(max_new_tokens=max_new_tokens, stop=STOP)
    run_requests(store, teacher, jobs, params, purpose="aggregate", run_id=run_id, postprocess=postprocess,
                 label=f"aggregate {teacher.name}")
    verify(store, pool, run_id, [verifier])
    fused = {s["request_key"]: s for s in store.curated_samples(pool, verifier, ["aggregate"])}
    rows = []
    for job in jobs:
        s = fused.get(keys_for(model_key(teacher), job, params)[0])
        if s is None or s["answer"] is None:
            continue  # unparseable output stays in the store with its parse error
        src = sources[job.rendered]
        rows.append(dict(prompt_id=job.prompt_id, method="llm_aggregate", sample_id=s["id"], detail={
            "candidates": len(src), "sources": [c["id"] for c in src], "teachers": sorted({c["teacher"] for c in src}),
            "chosen_teacher": teacher.name, "verified": s["passed"], "agreement": None}))
    return rows
