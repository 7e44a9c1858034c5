import pytest

from core.errors import DistillError
from synth.expand import clean_question, expand_prompts
from tests.doubles import ScriptedTeacher


def test_self_instruct_adds_train_prompts_with_parents_and_dedups(store, pool):
    teacher = ScriptedTeacher("t", ["Question: Is a tomato a fruit?", "Is a tomato a fruit?", "ok", "Can owls swim well?"])
    out = expand_prompts(store, teacher, pool, "re", count=8)
    rows = store.prompts(out["pool"])
    assert {r.input for r in rows} == {"Is a tomato a fruit?", "Can owls swim well?"}
    assert all(r.split == "train" and r.source == "synthetic" and r.meta["parents"] for r in rows)
    train_ids = {r.id for r in store.prompts(pool, split="train")}
    assert all(set(r.meta["parents"]) <= train_ids for r in rows), "seeds come from the train split only"
    assert out["unusable"] >= 1
    calls = teacher.calls
    again = expand_prompts(store, teacher, pool, "re2", count=8)
    assert teacher.calls == calls and again["new_prompts"] == 0


def test_evolve_and_bad_method(store, pool):
    out = expand_prompts(store, ScriptedTeacher("t", ["Would a pear sink in salty sea water at 4 C?"]), pool, "r",
                         method="evolve", count=2)
    assert out["new_prompts"] == 1
    with pytest.raises(DistillError, match="unknown expansion method"):
        expand_prompts(store, ScriptedTeacher("t", ["x"]), pool, "r", method="nope")


@pytest.mark.parametrize("text,expected", [("Question: Is it cold?", "Is it cold?"), ("\n\nNew question 2: Why is the sky blue?", "Why is the sky blue?"), ("ok", None)])
def test_clean_question(text, expected):
    assert clean_question(text) == expected
