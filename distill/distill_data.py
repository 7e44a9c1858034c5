"""The student's training set: teacher answers on train prompts, purified across teachers.

Every teacher answers train prompts in the evaluator's own prompt format (evals.scoring, the
same cached scoring requests `distill eval cascade` makes), the committee of teachers
averages their option distributions, and per prompt the answer kept is the first verified
one in this order: committee, then each teacher (verified-first purification; a wrong answer
teaches the student wrong). Verified chain-of-thought picks of the trace stage (the
`purified` table) add the prompts the answer stage did not keep. The result is TRL's plain
prompt/completion JSONL, so the student learns in the format it is evaluated in, with
lineage columns (prompt id, which teacher the answer came from).

Why not TRL or distilabel here: neither purifies option-level answers across teachers
against human labels; this is the few lines that do.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from curation.purify import METHOD
from store.store import Store
from evals.committee import can_form_committee, committee_name, committee_predictions
from evals.scoring import answer_items, exemplar_sets, mc_prompt
from clients.teachers import Teacher


def _label_rows(store: Store, pool: str, exemplars: list, limit: int | None) -> list:
    """Train rows with options, never one of the few-shot exemplars (its gold is in every prompt)."""
    shown = {r.id for shots in exemplars for r in shots}
    rows = [r for r in store.prompts(pool, split="train") if r.choices and r.id not in shown]
    return rows[:limit] if limit else rows


def build_sft_data(store: Store, pool: str, teachers: list[Teacher], path: str | Path, run_id: str, *,
                   limit: int | None = None, shots: int = 0, style: str = "mc", committee: bool = True,
                   require_verified: bool = True, seed: int = 0) -> dict:
    """Write the purified training set to `path`; returns the funnel counts.

    `require_verified=False` keeps the purified answer (the committee's, else the first teacher's)
    whether or not it matches the human label: the student then imitates the teachers, errors
    included, instead of learning the human labels through them."""
    exemplars = exemplar_sets(store.prompts(pool, split="train"), shots, 1, seed)
    rows = _label_rows(store, pool, exemplars, limit)
    preds = {t.name: answer_items(store, t, rows, exemplars, run_id, "teacher", style=style) for t in teachers}
    order = list(preds)
    if committee and can_form_committee(list(preds.values())):
        name = committee_name(order)
        preds = {name: committee_predictions(list(preds.values()), rows), **preds}
        order = [name, *order]
    kept: dict[str, tuple[str, str]] = {}  # prompt id -> (answer, where it came from)
    for i, row in enumerate(rows):
        source = next((m for m in order if preds[m][i]["correct"]), None) if require_verified else order[0]
        if source:
            kept[row.id] = (preds[source][i]["answer"], source)
    by_id = {r.id: r for r in store.prompts(pool, split="train")}
    shown = {r.id for shots in exemplars for r in shots}
    from_traces = 0
    for pick in store.frame_purified(pool, METHOD).to_dict("records"):
        row = by_id.get(pick["prompt_id"])
        if row and row.choices and pick["prompt_id"] not in kept and pick["answer"] in row.choices \
                and pick["answer"] == row.gold and pick["prompt_id"] not in shown:
            kept[pick["prompt_id"]] = (pick["answer"], f"trace:{pick['teacher']}")
            from_traces += 1
    shots_used = exemplars[0] if exemplars else []
    records = [{"prompt": mc_prompt(by_id[pid], shots_used, style), "completion": " " + answer,
                "prompt_id": pid, "teacher": source} for pid, (answer, source) in sorted(kept.items())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    os.replace(tmp, path)  # a killed run never leaves a half-written training set
    return {"labelled": len(rows),
            "correct": {m: sum(p["correct"] for p in preds[m]) for m in order},
            "kept": len(kept) - from_traces, "added_from_traces": from_traces, "rows": len(records),
            "picked": dict(Counter(source for _, source in kept.values())), "path": str(path)}
