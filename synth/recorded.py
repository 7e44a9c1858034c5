"""Import recorded teacher outputs (e.g. CHAMP's GPT-3.5 / GPT-4 / GPT-4 Turbo / PaLM 2 chats)
as if they had come from those teachers: each becomes a request and a trace in the store.

Expected prompt meta: {"recorded": {model: {setting: {"prompt": [messages], "output": str,
"answer": str | None, "truncated": bool}}}} — the shape prompts.champ produces. Imports are
keyed like live requests (model + rendered messages + params), so importing twice adds nothing.
"""
from __future__ import annotations

import json
import re

from store.store import Store
from core.errors import DistillError
from engine.jobs import GenParams, request_key


def teacher_name(model: str) -> str:
    """'GPT-4 Turbo' -> 'recorded:gpt-4-turbo': recorded teachers never collide with live ones."""
    return "recorded:" + re.sub(r"[^a-z0-9.]+", "-", model.lower()).strip("-")


def import_recorded(store: Store, pool: str, run_id: str, settings: list[str] | None = None,
                    models: list[str] | None = None) -> dict:
    """Write every recorded (model, setting) output of a pool's prompts; returns counts per teacher."""
    prompts = [p for p in store.prompts(pool) if p.meta.get("recorded")]
    if not prompts:
        raise DistillError(f"pool '{pool}' has no recorded teacher outputs: load one with `distill data load champ`")
    requests, samples, per_teacher = [], [], {}
    for p in prompts:
        for model, by_setting in p.meta["recorded"].items():
            if models and model not in models:
                continue
            for setting, rec in by_setting.items():
                if settings and setting not in settings:
                    continue
                name = teacher_name(model)
                rendered = json.dumps(rec["prompt"], sort_keys=True)
                params = GenParams()
                key = request_key(name, rendered + "\x1f" + setting, params, 0)
                output = rec.get("output") or ""
                answer = rec.get("answer")
                error = "truncated output (recorded)" if rec.get("truncated") else (
                    None if answer else "no final answer recorded")
                requests.append(dict(
                    key=key, model=name, prompt_id=p.id, template_hash=None,
                    params={"source": "recorded", "setting": setting, "original_model": model},
                    params_hash=params.hash(), sample_index=0, purpose="import", rendered=rendered,
                    status="done", response=output, prompt_tokens=None, completion_tokens=None,
                    cost_usd=0.0, latency_s=None, finish_reason="length" if rec.get("truncated") else "stop",
                    error=None, extra={"first_wrong_step": rec.get("first_wrong_step")}, run_id=run_id))
                samples.append(dict(id="s" + key[:23], prompt_id=p.id, request_key=key, teacher=name, kind="cot",
                                    reasoning=output, answer=answer if not rec.get("truncated") else None,
                                    parse_error=error, parent_id=None, run_id=run_id))
                per_teacher[name] = per_teacher.get(name, 0) + 1
    existing = store.finished_requests([r["key"] for r in requests])
    new_requests = [r for r in requests if r["key"] not in existing]
    new_keys = {r["key"] for r in new_requests}
    store.add_requests_and_samples(new_requests, [s for s in samples if s["request_key"] in new_keys])
    return {"prompts": len(prompts), "imported": len(new_requests), "already_there": len(existing),
            "by_teacher": per_teacher}
