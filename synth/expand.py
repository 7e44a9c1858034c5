"""Synthetic prompt expansion from seed prompts: self-instruct (new questions in the style of
a few seeds) and evol-instruct (a seed rewritten to be harder).

New prompts go to their own pool, always in the train split (a synthetic prompt is never an
evaluation item), with their parents and method in meta. Ids hash the normalised text, so
duplicates of an existing prompt or of each other are not added twice.
"""
from __future__ import annotations

import json
import random
import re

from store.store import Store
from core.errors import DistillError
from prompts.rows import PromptRow, stable_id
from prompts.templates import render, template_hash
from engine.jobs import GenParams, Job
from engine.engine import run_requests
from clients.types import Generation
from clients.teachers import Teacher

METHODS = ("self_instruct", "evolve")


def clean_question(text: str) -> str | None:
    """First non-empty line, without a leading 'Question:'; None when nothing usable is left."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(new\s+)?question\s*\d*\s*[:.]\s*", "", line, flags=re.IGNORECASE).strip()
        if len(line.split()) >= 3:
            return line
    return None


def expand_prompts(store: Store, teacher: Teacher, pool: str, run_id: str, *, method: str = "self_instruct",
                   count: int = 16, seeds_per_prompt: int = 3, temperature: float = 0.9,
                   max_new_tokens: int = 48, new_pool: str | None = None, seed: int = 0) -> dict:
    if method not in METHODS:
        raise DistillError(f"unknown expansion method '{method}': use one of {', '.join(METHODS)}")
    seeds = store.prompts(pool, split="train")  # never expand calibration or test rows
    if not seeds:
        raise DistillError(f"pool '{pool}' has no train prompts to expand")
    rng = random.Random(seed)
    template = "self_instruct.j2" if method == "self_instruct" else "evolve.j2"
    jobs, parents = [], {}
    for i in range(count):
        picked = rng.sample(seeds, min(seeds_per_prompt, len(seeds))) if method == "self_instruct" else [rng.choice(seeds)]
        text = render(template, examples=picked, row=picked[0])
        rendered = teacher.render([{"role": "user", "content": text}]) if teacher.is_chat else text + "\nQuestion:"
        jobs.append(Job(prompt_id=picked[0].id, rendered=rendered, template_hash=template_hash(template)))
        parents[rendered] = [p.id for p in picked]
    target = new_pool or f"{pool}-{method}"
    new_rows: list[PromptRow] = []

    def postprocess(job: Job, i: int, gen: Generation, key: str) -> tuple[dict, list[dict]]:
        question = clean_question(gen.text)
        return {"question": question, "error": None if question else "no usable question in output"}, []

    # Identical seed picks render identically and collapse into one cached request.
    params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    done = run_requests(store, teacher, jobs, params, purpose=f"expand-{method}", run_id=run_id,
                        postprocess=postprocess, label=f"expand {teacher.name}")
    failed = 0
    for req in done.values():
        extra = json.loads(req["extra"]) if isinstance(req["extra"], str) else req["extra"]
        question = extra.get("question")
        if not question:
            failed += 1
            continue
        pid = stable_id("synthetic", re.sub(r"\W+", " ", question.lower()).strip())
        new_rows.append(PromptRow(id=pid, source="synthetic", task=target, input=question, gold="", split="train",
                                  meta={"method": method, "parents": parents.get(req["rendered"], []),
                                        "teacher": teacher.name, "request_key": req["key"]}))
    added = store.add_prompts(new_rows, target, run_id)
    return {"requested": len(jobs), "unusable": failed, "new_prompts": added, "pool": target}
