"""Export selected traces in TRL's conversational `messages` format (JSONL)."""
from __future__ import annotations

import json
from pathlib import Path

from curation.purify import METHOD
from curation.store import Store
from distill.errors import DistillError
from prompts.rows import PromptRow
from prompts.templates import render


def student_user_turn(row: PromptRow) -> str:
    """What the student sees at training and at serving time: the question, no exemplars."""
    return render("cot_chat.j2", examples=[], row=row)


def assistant_turn(reasoning: str, answer: str) -> str:
    return f"Reasoning: {reasoning}\nAnswer: {answer}"


def student_row(db_row: dict) -> PromptRow:
    """A prompt row rebuilt from a joined store row (input + choices are all the student sees)."""
    return PromptRow(id=db_row["prompt_id"], source="", task="", input=db_row["input"], gold="", split="train",
                     choices=json.loads(db_row["choices"]) if db_row["choices"] else None)


def write_jsonl(path: str | Path, records: list[dict]) -> dict:
    """Write through a temp file and rename, so a crash never leaves a half-written export."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return {"rows": len(records), "path": str(path)}


def export_sft(store: Store, pool: str, path: str | Path, method: str = METHOD) -> dict:
    traces = store.purified_traces(pool, method)
    if not traces:
        raise DistillError(f"no selected traces in pool '{pool}': run `distill curate` after `distill synth`")
    records = []
    for t in traces:
        if t["split"] != "train":  # belt and braces: the query already filters
            raise DistillError(f"refusing to export prompt {t['prompt_id']} from split {t['split']}")
        messages = [{"role": "user", "content": student_user_turn(student_row(t))},
                    {"role": "assistant", "content": assistant_turn(t["reasoning"], t["answer"])}]
        records.append({"messages": messages, "prompt_id": t["prompt_id"], "sample_id": t["sample_id"],
                        "teacher": t["teacher"]})
    return write_jsonl(path, records)


def export_trajectories(store: Store, pool: str, path: str | Path, verified_only: bool = True) -> dict:
    """Tool-use trajectories in TRL's tool-calling chat format: {"messages": [...], "tools": [...]}.

    Only trajectories whose final answer matches the gold answer are kept by default.
    """
    from curation.verify import answers_match
    from synth.react import trajectory_row

    rows = [s for s in store.train_samples_of_kind(pool, "tool_trajectory") if s["answer"] is not None
            and (not verified_only or answers_match(s["answer"], s["gold"]))]
    if not rows:
        raise DistillError(f"no {'verified ' if verified_only else ''}tool trajectories in pool '{pool}'")
    return write_jsonl(path, [dict(trajectory_row(s), prompt_id=s["prompt_id"], teacher=s["teacher"]) for s in rows])
