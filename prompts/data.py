"""Offline human-labelled prompt sources, and `load_task` to pick one by a short spec.

    <name>                        a catalog task that installs from PyPI (prompts.catalog):
                                  gsm8k, arc_easy, boolq, mmlu:astronomy, ... (`distill data list`)
    bigbench:<task>[:<subtask>]   BIG-bench JSON task, only if you bring its files (prompts.bigbench)
    champ                         CHAMP math problems + recorded teacher chats (prompts.champ)
    bfcl[:<category>]             Berkeley Function-Calling Leaderboard (prompts.bfcl)
    humaneval                     HumanEval: 164 Python problems with unit tests (prompts.humaneval)
    <path>.jsonl|.csv|.parquet    the user's own labelled file (prompts.pool_file)
"""
from __future__ import annotations

from pathlib import Path

from core.errors import DistillError
from prompts.bfcl import bfcl_categories, load_bfcl
from prompts.bigbench import (
    bigbench_available,
    bigbench_task_names,
    fetch_bigbench,
    load_bigbench,
)
from prompts.catalog import catalog, load_catalog_task
from prompts.wheels import unknown_task
from prompts.champ import load_champ
from prompts.humaneval import load_humaneval
from prompts.pool_file import FORMATS, load_pool_file
from prompts.rows import PromptRow

__all__ = [
    "bfcl_categories", "bigbench_available", "bigbench_task_names", "catalog", "fetch_bigbench",
    "load_bfcl", "load_bigbench", "load_champ", "load_humaneval", "load_pool_file", "load_task",
    "task_names",
]

_OTHER = ["champ", "humaneval", "bfcl"]


def task_names() -> list[str]:
    """Every short spec that loads without a path: catalog tasks, champ, humaneval, bfcl:<category>."""
    try:
        bfcl = [f"bfcl:{c}" for c in bfcl_categories()]
    except DistillError:  # bfcl-eval missing: that must not hide the real "unknown task" error
        bfcl = []
    return [*catalog(), *_OTHER, *bfcl]


def load_task(spec: str, **kw) -> list[PromptRow]:
    """Load rows by spec; keyword arguments go to the chosen loader (calibration, test, ...)."""
    if not isinstance(spec, str) or not spec.strip():
        raise DistillError(f"load_task needs a task name or file path, got {spec!r}: `distill data list` shows the tasks")
    source, _, rest = spec.partition(":")
    if spec in catalog() or spec.startswith("mmlu:"):
        return load_catalog_task(spec, **kw)
    if source == "bigbench" and rest:
        return load_bigbench(rest, **kw)
    if spec == "champ":
        return load_champ(**kw)
    if spec == "humaneval":
        return load_humaneval(**kw)
    if source == "bfcl":
        return load_bfcl(rest or "simple", **kw)
    if Path(spec).suffix.lower() in FORMATS or Path(spec).is_file():
        return load_pool_file(spec, **kw)
    raise unknown_task(spec, task_names())
