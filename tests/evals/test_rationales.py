"""Rationale fidelity (evals/rationales.py) with scripted explainers and the real MiniLM encoder."""
from __future__ import annotations

import pytest

from evals.rationales import RATIONALE_PARAMS, rationale_fidelity, rationale_prompt
from prompts.rows import PromptRow
from tests.doubles import ScriptedTeacher


def _rows(n: int) -> list[PromptRow]:
    return [PromptRow(id=f"r{i}", source="file", task="t", input=f"Is {i} even?", gold="yes" if i % 2 == 0 else "no", split="test",
                      choices=["yes", "no"]) for i in range(n)]


def test_the_prompt_shows_the_models_own_answer():
    text = rationale_prompt(_rows(1)[0], "no")
    assert text.startswith("Question: Is 0 even?\nOptions: yes; no\nAnswer: no\n")
    assert text.endswith("Explanation: Because") and RATIONALE_PARAMS.stop == ("\n",)


def test_identical_explanations_score_one_and_different_ones_less(store):
    rows = _rows(4)
    same = rationale_fidelity(store, ScriptedTeacher("a", ["an even number divides by two"]),
                              ScriptedTeacher("b", ["an even number divides by two"]), rows,
                              ["yes", "no", "yes", "no"], ["yes", "no", "no", "yes"], "run1")
    assert same.similarity.value == pytest.approx(1.0, abs=1e-5)
    assert same.when_answers_agree.n == 2 and same.when_answers_differ.n == 2
    other = rationale_fidelity(store, ScriptedTeacher("c", ["an even number divides by two"]),
                               ScriptedTeacher("d", ["the weather in Paris is mild in spring"]), rows,
                               ["yes"] * 4, ["yes"] * 4, "run1")
    assert other.similarity.value < 0.5 and other.when_answers_differ.n == 0


def test_an_empty_explanation_scores_zero(store):
    out = rationale_fidelity(store, ScriptedTeacher("e", [""]), ScriptedTeacher("f", ["two divides it"]),
                             _rows(2), ["yes", "no"], ["yes", "no"], "run1")
    assert out.similarity.value == 0.0 and out.empty_explanations == {"student": 2, "teacher": 0}
