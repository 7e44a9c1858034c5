"""Exports for TRL from store views, with lineage columns and a data card.

    sft     {"messages": [user, assistant]} from purified traces (with or without the reasoning)
    dpo     {"prompt", "chosen", "rejected"} message lists from stored pairs
    prompt  {"prompt": [user]} of every train prompt, for on-policy distillation
    tools   {"messages", "tools"} verified tool-use trajectories in TRL's tool-calling format

Every record carries lineage columns (prompt_id, sample_id / chosen_sample_id /
rejected_sample_id, request_key, teacher) that join back to the store. JSONL or Parquet by
the file suffix; `records()` gives the rows for a `datasets.Dataset`. Only train-split rows
are exported, and rows overlapping a held-out split (curation/decontam.py) are refused unless
forced. Each export is recorded in the store's `exports` table with its data card, which is
also written beside the file as `<name>.card.md`.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from store.store import Store, git_sha
from core.errors import DistillError
from prompts.rows import PromptRow, student_row
from prompts.templates import render

KINDS = ("sft", "dpo", "prompt", "tools")


def student_user_turn(row: PromptRow, reasoning: bool = True) -> str:
    """What the student sees at training and at serving time: the question, no exemplars."""
    return render("cot_chat.j2" if reasoning else "answer_chat.j2", examples=[], row=row)


def assistant_turn(reasoning: str, answer: str) -> str:
    return f"Reasoning: {reasoning}\nAnswer: {answer}"


def _completion(reasoning: str | None, answer: str | None, with_reasoning: bool = True) -> list[dict]:
    if not with_reasoning:
        return [{"role": "assistant", "content": f"Answer: {answer}"}]
    text = assistant_turn(reasoning or "", answer) if answer is not None else f"Reasoning: {reasoning or ''}"
    return [{"role": "assistant", "content": text}]


def records(store: Store, pool: str, kind: str, *, method: str = "verified_first", strategy: str = "verified",
            reasoning: bool = True) -> list[dict]:
    """Export rows of one kind, lineage columns included (train split only)."""
    if kind == "sft":
        rows = store.purified_traces(pool, method)
        if not rows:
            raise DistillError(f"no '{method}' traces in pool '{pool}': run `distill curate` after `distill synth`")
        return [{"messages": [{"role": "user", "content": student_user_turn(student_row(t), reasoning)}]
                 + _completion(t["reasoning"], t["answer"], reasoning),
                 "prompt_id": t["prompt_id"], "sample_id": t["sample_id"], "request_key": t["request_key"],
                 "teacher": t["teacher"]} for t in rows]
    if kind == "dpo":
        rows = store.pairs_for_export(pool, strategy)
        if not rows:
            raise DistillError(f"no '{strategy}' pairs in pool '{pool}': run `distill pairs` first")
        return [{"prompt": [{"role": "user", "content": student_user_turn(student_row(p), reasoning)}],
                 "chosen": _completion(p["chosen_reasoning"], p["chosen_answer"], reasoning),
                 "rejected": _completion(p["rejected_reasoning"], p["rejected_answer"], reasoning),
                 "margin": p["margin"], "strategy": strategy, "prompt_id": p["prompt_id"], "pair_id": p["id"],
                 "chosen_sample_id": p["chosen_sample_id"], "rejected_sample_id": p["rejected_sample_id"],
                 "teacher": p["chosen_teacher"]} for p in rows]
    if kind == "prompt":
        rows = store.prompts(pool, split="train")
        if not rows:
            raise DistillError(f"pool '{pool}' has no train prompts: load data with `distill data load`")
        return [{"prompt": [{"role": "user", "content": student_user_turn(r, reasoning)}], "prompt_id": r.id,
                 "gold": r.gold} for r in rows]
    if kind == "tools":
        from synth.react import trajectory_row

        rows = store.verified_samples_of_kind(pool, "tool_trajectory", "answer_match")
        if not rows:
            raise DistillError(f"no verified tool trajectories in pool '{pool}': run `distill synth --kind react` "
                               "then `distill curate`")
        return [dict(trajectory_row(s), prompt_id=s["prompt_id"], sample_id=s["id"], request_key=s["request_key"],
                     teacher=s["teacher"]) for s in rows]
    raise DistillError(f"unknown export kind {kind!r}: choose from {', '.join(KINDS)}")


def _sample_ids(record: dict) -> list[str]:
    return [record[k] for k in ("sample_id", "chosen_sample_id", "rejected_sample_id") if record.get(k)]


def _write(path: Path, rows: list[dict]) -> None:
    """Through a temp file and a rename, so a crash never leaves a half-written export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp)
    else:
        with tmp.open("w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def export(store: Store, pool: str, kind: str, path: str | Path, *, method: str = "verified_first",
           strategy: str = "verified", reasoning: bool = True, force: bool = False,
           drop_contaminated: bool = False, run_id: str | None = None) -> dict:
    """Write one export (JSONL or Parquet by suffix), record it with its data card; returns the card."""
    from curation.decontam import decontaminate, reference

    path = Path(path)
    if path.suffix not in (".jsonl", ".parquet"):
        raise DistillError(f"export path {path} must end in .jsonl or .parquet")
    rows = records(store, pool, kind, method=method, strategy=strategy, reasoning=reasoning)
    check = decontaminate(store, pool, run_id or "export")
    if kind == "prompt":
        ref = reference(store)
        dirty = {r["prompt_id"] for r in rows if ref.match(r["prompt"][0]["content"])}
        bad = [r for r in rows if r["prompt_id"] in dirty]
    else:
        dirty = store.failed_sample_ids("decontam", check["version"])
        bad = [r for r in rows if dirty.intersection(_sample_ids(r))]
    if bad and not force:
        if not drop_contaminated:
            raise DistillError(f"{len(bad)} of {len(rows)} {kind} rows overlap a held-out split (decontam verdicts): "
                               "pass --drop-contaminated to leave them out, or --force to export them anyway")
        rows = [r for r in rows if r not in bad]
    # The id hashes the content: the same rows give the same file, byte for byte, so a trainer
    # that fingerprints its data reuses its checkpoint when nothing changed.
    export_id = "x" + hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:12]
    for r in rows:
        r["export_id"] = export_id
    _write(path, rows)
    ids = sorted({i for r in rows for i in _sample_ids(r)})
    card = {"export_id": export_id, "kind": kind, "pool": pool, "path": str(path), "rows": len(rows),
            "format": path.suffix[1:], "options": {"method": method, "strategy": strategy, "reasoning": reasoning},
            "per_teacher": dict(Counter(r.get("teacher") or "none" for r in rows)),
            "verdicts": store.verdict_counts(ids), "dedup": {"dropped": store.dedup_dropped(pool)},
            "decontam": {"version": check["version"], "reference_texts": check["reference_texts"],
                         "contaminated_rows": len(bad), "forced": bool(bad) and force,
                         "dropped": len(bad) if (bad and not force) else 0},
            "lineage": {"store": str(store.path), "git_sha": git_sha(), "join": "sample_id = samples.id"}}
    store.add_export(card, run_id)
    path.with_name(path.stem + ".card.md").write_text(card_markdown(card))
    return card


def card_markdown(card: dict) -> str:
    lines = [f"# Data card: {card['kind']} export of pool `{card['pool']}`", "",
             f"- rows: {card['rows']} ({card['format']}) at `{card['path']}`, export id `{card['export_id']}`",
             f"- options: {json.dumps(card['options'])}",
             f"- lineage: store `{card['lineage']['store']}`, code {card['lineage']['git_sha']}; "
             "every row's `sample_id` (or `chosen_sample_id`/`rejected_sample_id`) joins `samples.id`",
             f"- decontamination ({card['decontam']['version']}, {card['decontam']['reference_texts']} held-out texts): "
             f"{card['decontam']['contaminated_rows']} contaminated rows, {card['decontam']['dropped']} dropped, "
             f"forced: {card['decontam']['forced']}",
             f"- dedup, samples dropped in the pool: {json.dumps(card['dedup']['dropped'])}", "",
             "| teacher | rows |", "|---|---|"]
    lines += [f"| {t} | {n} |" for t, n in sorted(card["per_teacher"].items())]
    lines += ["", "| verifier | passed | failed |", "|---|---|---|"]
    lines += [f"| {v} | {c['passed']} | {c['failed']} |" for v, c in sorted(card["verdicts"].items())]
    return "\n".join(lines) + "\n"


def export_sft(store: Store, pool: str, path: str | Path, method: str = "verified_first") -> dict:
    card = export(store, pool, "sft", path, method=method)
    return {"rows": card["rows"], "path": card["path"]}


def export_trajectories(store: Store, pool: str, path: str | Path) -> dict:
    card = export(store, pool, "tools", path)
    return {"rows": card["rows"], "path": card["path"]}
