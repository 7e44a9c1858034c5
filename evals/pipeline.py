"""Score student, teachers and the cascade on held-out human labels, through the store.

Every model answers the calibration and test splits through the same request cache as
synthesis (so a re-run costs nothing). For multiple-choice tasks the model writes its
reasoning, then each option is scored as the continuation of "Answer:"; the softmax over
options gives the answer and a confidence in [0, 1]. Thresholds are fitted on the
calibration split only; the test split is only ever scored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from curation.export import student_user_turn
from curation.store import Store
from curation.verify import answers_match
from distill.errors import DistillError
from evals.cascade import ModelAnswers, evaluate
from evals.report import write_report
from prompts.rows import PromptRow
from prompts.templates import template_hash
from synth.cot import (
    build_prompt,
    choice_probs,
    fewshot_examples,
    parse_trace,
    register_templates,
)
from synth.engine import GenParams, Job, keys_for, run_requests
from synth.local import Generation
from synth.teachers import Teacher


def predict(store: Store, model: Teacher, rows: list[PromptRow], role: str, params: GenParams,
            run_id: str, train_rows: list[PromptRow], num_examples: int = 2) -> list[dict]:
    """One answer per row from `model` acting as `role` (student sees no exemplars)."""
    jobs, by_id = [], {r.id: r for r in rows}
    register_templates(store)
    for row in rows:
        if role == "student":
            rendered = model.render([{"role": "user", "content": student_user_turn(row)}]) + "Reasoning:"
            jobs.append(Job(prompt_id=row.id, rendered=rendered, template_hash=template_hash("cot_chat.j2")))
        else:
            examples = fewshot_examples(train_rows, num_examples, exclude=row.id)
            rendered, t_hash = build_prompt(model, row, examples)
            jobs.append(Job(prompt_id=row.id, rendered=rendered, template_hash=t_hash))

    def postprocess(job: Job, _i: int, gen: Generation, _key: str) -> tuple[dict, list[dict]]:
        row = by_id[job.prompt_id]
        if row.choices:
            return {"choice_probs": choice_probs(model, job.rendered, gen.text, row.choices)}, []
        return {"mean_logprob": float(np.mean(gen.token_logprobs)) if gen.token_logprobs else -99.0}, []

    done = run_requests(store, model, jobs, params, purpose=f"eval-{role}", run_id=run_id,
                        postprocess=postprocess, label=f"eval {role} {Path(model.name).name}")
    out = []
    for job in jobs:
        row = by_id[job.prompt_id]
        req = done[keys_for(model.name, job, params)[0]]
        extra = json.loads(req["extra"]) if isinstance(req["extra"], str) else (req["extra"] or {})
        if row.choices:
            probs = extra["choice_probs"]
            best = int(np.argmax(probs))
            answer, confidence = row.choices[best], float(probs[best])
        else:
            _, answer, _ = parse_trace(req["response"], None)
            confidence = math.exp(extra.get("mean_logprob", -99.0))
        out.append(dict(prompt_id=row.id, split=row.split, request_key=req["key"], answer=answer,
                        correct=answers_match(answer, row.gold), confidence=confidence,
                        tokens=int(req["prompt_tokens"] + req["completion_tokens"])))
    return out


def _answers(name: str, preds: list[dict], split: str, with_confidence: bool) -> ModelAnswers:
    part = [p for p in preds if p["split"] == split]
    return ModelAnswers(name=name, correct=np.array([p["correct"] for p in part], dtype=bool),
                        tokens=np.array([p["tokens"] for p in part], dtype=int),
                        confidence=np.array([p["confidence"] for p in part]) if with_confidence else None)


def evaluate_cascade(store: Store, pool: str, student: Teacher, teachers: list[Teacher], run_id: str,
                     out_dir: str | Path, params: GenParams, limit: int | None = None,
                     target_accuracy: float | None = None, max_teacher_share: float | None = None,
                     extra_sections: dict[str, str] | None = None, title: str = "") -> dict:
    """Predictions for every model on calibration + test, cascade fitted and scored, report written."""
    calib = store.prompts(pool, split="calibration", limit=limit)
    test = store.prompts(pool, split="test", limit=limit)
    if not calib or not test:
        raise DistillError(f"pool '{pool}' needs calibration and test prompts: load a larger task or raise --limit")
    train_rows = store.prompts(pool, split="train")
    rows = calib + test
    predictions = {"student": predict(store, student, rows, "student", params, run_id, train_rows)}
    for t in teachers:
        predictions[t.name] = predict(store, t, rows, "teacher", params, run_id, train_rows)
    student_name = f"student ({Path(student.name).name})"
    result = evaluate(
        _answers(student_name, predictions["student"], "calibration", True),
        [_answers(t.name, predictions[t.name], "calibration", False) for t in teachers],
        _answers(student_name, predictions["student"], "test", True),
        [_answers(t.name, predictions[t.name], "test", False) for t in teachers],
        target_accuracy=target_accuracy, max_teacher_share=max_teacher_share)
    result["split_sizes"] = {"calibration": len(calib), "test": len(test)}
    report = write_report(result, Path(out_dir), title or f"Cascade on {pool}", extra_sections=extra_sections)
    eval_id = f"eval-{run_id}"
    rows_out = [dict(p, eval_id=eval_id, model=(student_name if name == "student" else name))
                for name, preds in predictions.items() for p in preds]
    store.add_eval(eval_id, run_id, pool, "test", {"teachers": [t.name for t in teachers],
                   "student": student.name, "params": params.as_dict()}, result, str(report), rows_out)
    return {"report": str(report), "result": result}
