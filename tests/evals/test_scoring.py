"""Option scoring through the store's request cache (evals/scoring.py), with scripted models."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from core.errors import DistillError
from evals.scoring import (
    SCORE_PARAMS,
    answer_items,
    batch_priors,
    exemplar_sets,
    mc_prompt,
    self_verify_prompt,
)
from prompts.rows import PromptRow, split_for, stable_id
from engine.jobs import request_key
from tests.doubles import ScriptedTeacher

YES, NO = -0.2, -1.5  # the scripted student's summed log-probs for the two options


class Counting(ScriptedTeacher):
    """ScriptedTeacher that counts scoring calls (no continuation_details: one pseudo-token per option)."""

    def __init__(self, name, choice_scores):
        super().__init__(name, ["unused"], choice_scores=choice_scores)
        self.scored = 0

    def score_continuations(self, prompt, continuations):
        self.scored += 1
        return super().score_continuations(prompt, continuations)


class PromptDependent(Counting):
    """Scores that change with the whole prompt, so different exemplar sets can change the answer."""

    def score_continuations(self, prompt, continuations):
        self.scored += 1
        return [-int(hashlib.sha256((prompt + c).encode()).hexdigest()[:6], 16) / 2**24 * 3 for c in continuations]


def make_rows(n: int) -> list[PromptRow]:
    """Yes/no questions with hashed splits (about 60% train)."""
    rows = []
    for i in range(n):
        text = f"Is {i} an even number?"
        rid = stable_id("test", text)
        rows.append(PromptRow(id=rid, source="test", task="yesno", input=text, gold="Yes" if i % 2 == 0 else "No",
                              split=split_for(rid), choices=["Yes", "No"]))
    return rows


def split_rows(n=80):
    rows = make_rows(n)
    return ([r for r in rows if r.split == "train"],
            [r for r in rows if r.split != "train"])


# --- exemplars and prompts ------------------------------------------------------------


def test_exemplar_sets_are_train_rows_disjoint_and_seeded():
    train, held = split_rows()
    assert len(train) >= 9
    sets = exemplar_sets(train + held, shots=3, variants=3, seed=0)
    assert len(sets) == 3 and all(len(s) == 3 for s in sets)
    ids = [r.id for s in sets for r in s]
    assert len(set(ids)) == 9  # disjoint while the pool is big enough
    assert all(r.split == "train" and r.choices for s in sets for r in s)
    assert exemplar_sets(train, 3, 3, seed=0) == sets  # the held-out rows never count
    assert exemplar_sets(train, 3, 3, seed=1) != sets
    # A small pool wraps around: still `shots` exemplars per set.
    small = exemplar_sets(train[:4], shots=3, variants=3)
    assert [len(s) for s in small] == [3, 3, 3] and {r.id for s in small for r in s} == {r.id for r in train[:4]}


def test_balanced_exemplars_show_every_label_before_any_repeats():
    labels = ["a"] * 20 + ["b"] * 3 + ["c"] * 2  # a skewed train split
    train = [PromptRow(id=f"t{i}", source="t", task="t", input=f"q{i}", gold=g, split="train", choices=["a", "b", "c"])
             for i, g in enumerate(labels)]
    for seed in range(5):
        first = exemplar_sets(train, shots=3, variants=2, seed=seed, balanced=True)
        assert all(sorted(r.gold for r in shots) == ["a", "b", "c"] for shots in first)
        assert {r.id for r in first[0]}.isdisjoint({r.id for r in first[1]})
    plain = [sorted(r.gold for r in exemplar_sets(train, 3, 1, seed=s)[0]) for s in range(5)]
    assert any(p != ["a", "b", "c"] for p in plain)  # without balancing the majority label crowds in


def test_exemplar_sets_edge_cases():
    train, held = split_rows()
    assert exemplar_sets(held, shots=0, variants=3) == [[], [], []]
    with pytest.raises(DistillError, match="labelled train rows"):
        exemplar_sets(held, shots=2, variants=1)
    no_choices = [PromptRow(id=r.id, source=r.source, task=r.task, input=r.input, gold=r.gold, split="train")
                  for r in train]
    # Without options anywhere the task is open-answer: its answered train rows are the exemplars.
    assert exemplar_sets(no_choices, shots=1, variants=1)[0][0] in no_choices
    # With options, rows without them are never exemplars.
    assert exemplar_sets(no_choices + train[:1], shots=1, variants=2) == [[train[0]], [train[0]]]
    unanswered = [PromptRow(id=r.id, source=r.source, task=r.task, input=r.input, gold="", split="train")
                  for r in train]
    with pytest.raises(DistillError, match="labelled train rows"):
        exemplar_sets(unanswered, shots=1, variants=1)


def test_mc_prompt_text():
    row = PromptRow(id="x", source="t", task="t", input="Is it?", gold="No", split="test", choices=["Yes", "No"])
    ex = PromptRow(id="e", source="t", task="t", input="Was it?", gold="Yes", split="train", choices=["Yes", "No"])
    assert mc_prompt(row, []) == "Question: Is it?\nOptions: Yes; No\nAnswer:"
    assert mc_prompt(row, [ex]) == ("Question: Was it?\nOptions: Yes; No\nAnswer: Yes\n\n"
                                    "Question: Is it?\nOptions: Yes; No\nAnswer:")
    assert self_verify_prompt(row, [], "No") == ("Question: Is it?\nOptions: Yes; No\nAnswer: No\n"
                                                  "Question: Is that answer correct?\nOptions: Yes; No\nAnswer:")
    # Cloze: BIG-bench's protocol, the option continues the input and no option list is shown.
    assert mc_prompt(row, [ex], "cloze") == "Was it? Yes\n\nIs it?"
    with pytest.raises(DistillError, match="unknown prompt style 'qa'"):
        mc_prompt(row, [], "qa")


def test_prompt_templates_keep_every_character():
    """The prompt text keys every cached request: whitespace at either end of an input, an open-answer
    row (no options line) and an empty option list must come out exactly as written."""
    blank = PromptRow(id="b", source="t", task="t", input="  The sky is ", gold="blue", split="test", choices=None)
    ex = PromptRow(id="e", source="t", task="t", input="Grass is\n", gold="green", split="train", choices=[])
    assert mc_prompt(blank, [ex], "cloze") == "Grass is\n green\n\n  The sky is "
    assert mc_prompt(blank, [ex]) == ("Question: Grass is\n\nOptions: \nAnswer: green\n\n"
                                      "Question:   The sky is \nAnswer:")
    assert self_verify_prompt(blank, [], " blue ").endswith("Question:   The sky is \nAnswer:  blue \n"
                                                             "Question: Is that answer correct?\nOptions: Yes; No\nAnswer:")


def test_cloze_prompts_are_what_the_model_scores(setup):
    store, rows, ex = setup
    seen = []

    class Recording(Counting):
        def score_continuations(self, prompt, continuations):
            seen.append(prompt)
            return super().score_continuations(prompt, continuations)

    answer_items(store, Recording("cloze", {"Yes": YES, "No": NO}), rows, ex[:1], "run1", "teacher", style="cloze")
    assert seen == [mc_prompt(r, ex[0], "cloze") for r in rows] and "Options:" not in seen[0]


# --- answer_items through the store ---------------------------------------------------


@pytest.fixture
def setup(store):
    train, held = split_rows()
    return store, held, exemplar_sets(train, shots=2, variants=3)


def test_student_answers_features_tokens_and_stored_requests(setup):
    store, rows, ex = setup
    model = Counting("stu", {"Yes": YES, "No": NO})
    out = answer_items(store, model, rows, ex, "run1", "student")
    assert model.scored == 3 * len(rows)
    assert [p["prompt_id"] for p in out] == [r.id for r in rows]
    p_yes = math.exp(YES) / (math.exp(YES) + math.exp(NO))
    for row, p in zip(rows, out):
        assert p["answer"] == "Yes" and p["correct"] == (row.gold == "Yes") and p["split"] == row.split
        f = p["features"]
        assert f["answer_index"] == 0 and f["max_prob"] == pytest.approx(p_yes)
        assert f["margin"] == pytest.approx(2 * p_yes - 1)
        assert f["seq_prob"] == pytest.approx(math.exp(YES)) and f["token_q10"] == pytest.approx(math.exp(YES))
        assert f["token_margin"] == 0.0  # no margins from a scripted model
        assert f["agreement"] == 1.0
        # Tokens of every variant: whitespace words of the prompt (no tokenizer) + one pseudo-token.
        assert p["tokens"] == sum(len(mc_prompt(row, shots).split()) + 1 for shots in ex)
        assert p["request_key"] == request_key("stu", mc_prompt(row, ex[0]), SCORE_PARAMS, 0)
    reqs = store.query("SELECT * FROM requests WHERE model = 'stu'")
    assert len(reqs) == 3 * len(rows)
    assert {r["purpose"] for r in reqs} == {"eval-student"} and {r["run_id"] for r in reqs} == {"run1"}
    extra = json.loads(reqs[0]["extra"])
    assert [o["token_logprobs"] for o in extra["options"]] == [[YES], [NO]]
    assert all(json.loads(r["params"])["max_new_tokens"] == 0 for r in reqs)


def test_second_call_is_served_from_the_store(setup):
    store, rows, ex = setup
    model = Counting("stu", {"Yes": YES, "No": NO})
    first = answer_items(store, model, rows, ex, "run1", "student", self_verify=True)
    calls, n_req = model.scored, store.count("requests")
    again = Counting("stu", {"Yes": 5.0, "No": 9.0})  # a model call would now give other answers
    second = answer_items(store, again, rows, ex, "run2", "student", self_verify=True)
    assert again.scored == 0 and store.count("requests") == n_req and calls == 4 * len(rows)
    assert second == first and store.run_summary("run2")["stu"]["cache_hits"] == calls


def test_the_same_model_in_another_number_format_is_scored_again(setup):
    # LocalGenerator names its bf16 cache entries "name@bfloat16": fp32 scores are not reused for them.
    store, rows, ex = setup
    answer_items(store, Counting("stu", {"Yes": YES, "No": NO}), rows, ex, "run1", "student")
    bf16 = Counting("stu", {"Yes": YES, "No": NO})
    bf16.cache_name = "stu@bfloat16"
    answer_items(store, bf16, rows, ex, "run2", "student")
    assert bf16.scored == 3 * len(rows)
    again = Counting("stu", {"Yes": YES, "No": NO})
    again.cache_name = "stu@bfloat16"
    answer_items(store, again, rows, ex, "run3", "student")
    assert again.scored == 0


def test_an_interrupted_run_resumes_where_it_stopped(setup):
    store, rows, ex = setup
    model = Counting("stu", {"Yes": YES, "No": NO})
    answer_items(store, model, rows[:5], ex, "run1", "student")
    model.scored = 0
    out = answer_items(store, model, rows, ex, "run2", "student")
    assert model.scored == 3 * (len(rows) - 5) and len(out) == len(rows)


def test_teacher_uses_the_main_prompt_only(setup):
    store, rows, ex = setup
    model = Counting("tea", {"Yes": -3.0, "No": -0.1})
    out = answer_items(store, model, rows, ex, "run1", "teacher")
    assert model.scored == len(rows)
    assert all(p["answer"] == "No" and "agreement" not in p["features"] for p in out)
    assert [p["tokens"] for p in out] == [len(mc_prompt(r, ex[0]).split()) + 1 for r in rows]
    assert store.count("requests", "purpose = 'eval-teacher'") == len(rows)


def test_agreement_is_the_share_of_variants_giving_the_main_answer(setup):
    store, rows, ex = setup
    model = PromptDependent("pd", {})
    out = answer_items(store, model, rows, ex, "run1", "student")
    values = []
    for row, p in zip(rows, out):
        answers = []
        for shots in ex:
            scores = model.score_continuations(mc_prompt(row, shots), [" " + c for c in row.choices])
            answers.append(row.choices[int(np.argmax(scores))])
        assert p["answer"] == answers[0]
        assert p["features"]["agreement"] == pytest.approx(answers.count(answers[0]) / 3)
        values.append(p["features"]["agreement"])
    assert len(set(values)) > 1  # the test would not notice a constant


def test_self_verify_adds_the_probability_of_yes(setup):
    store, rows, ex = setup
    model = Counting("stu", {"Yes": YES, "No": NO})
    out = answer_items(store, model, rows, ex, "run1", "student", self_verify=True)
    p_yes = math.exp(YES) / (math.exp(YES) + math.exp(NO))
    for row, p in zip(rows, out):
        assert p["features"]["verifier"] == pytest.approx(p_yes)
        assert p["tokens_verify"] == len(self_verify_prompt(row, ex[0], p["answer"]).split()) + 1
    assert store.count("requests", "purpose = 'eval-student-verify'") == len(rows)


def test_rows_without_choices_are_refused(setup):
    store, rows, ex = setup
    bare = [PromptRow(id="b", source="t", task="t", input="free text?", gold="x", split="test")]
    with pytest.raises(DistillError, match="needs choices"):
        answer_items(store, Counting("stu", {}), rows[:2] + bare, ex, "run1", "student")
    assert store.count("requests") == 0


def test_rows_sharing_a_prompt_with_different_labels(store):
    """Two rows with the same question and options but different (noisy) labels render the same prompt."""
    rows = [PromptRow(id=f"r{i}", source="t", task="t", input="Same question?", gold=g, split="test",
                      choices=["Yes", "No"]) for i, g in enumerate(["Yes", "No"])]
    out = answer_items(store, Counting("stu", {"Yes": YES, "No": NO}), rows, [[]], "run1", "student")
    assert [p["answer"] for p in out] == ["Yes", "Yes"] and [p["correct"] for p in out] == [True, False]
    assert store.count("requests") == 1


def test_an_option_containing_the_gold_label_is_wrong(store):
    """winowhy / sports_understanding: "incorrect" contains "correct", "implausible" contains "plausible";
    a chosen option is right only if it is the gold option itself."""
    rows = [PromptRow(id="w", source="t", task="t", input="Is the reason right?", gold="correct", split="test",
                      choices=["correct", "incorrect"]),
            PromptRow(id="s", source="t", task="t", input="Is it plausible?", gold="plausible", split="test",
                      choices=["plausible", "implausible"])]
    scores = {"incorrect": -0.1, "correct": -2.0, "implausible": -0.1, "plausible": -2.0}
    out = answer_items(store, Counting("stu", scores), rows, [[]], "run1", "student")
    assert [p["answer"] for p in out] == ["incorrect", "implausible"]
    assert [p["correct"] for p in out] == [False, False]


@pytest.mark.slow
def test_a_tiny_local_model_scores_real_tokens(store, tmp_path, monkeypatch):
    """LocalGenerator has continuation_details: per-token log-probs and top-2 margins are stored."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    from clients.local import LocalGenerator

    model = LocalGenerator("tiny-random", batch_size=4)
    train, held = split_rows(40)
    ex = exemplar_sets(train, shots=1, variants=2)
    rows = held[:6]
    out = answer_items(store, model, rows, ex, "run1", "student", self_verify=True)
    for row, p in zip(rows, out):
        f = p["features"]
        assert p["answer"] in row.choices and 0 < f["token_margin"] < 1 and 0 < f["seq_prob"] < 1
        assert 0 <= f["verifier"] <= 1 and f["agreement"] in (0.5, 1.0)
        prompt_tokens = sum(len(model.tokenizer(mc_prompt(row, s))["input_ids"]) for s in ex)
        assert p["tokens"] > prompt_tokens
    n_req = store.count("requests")
    assert answer_items(store, model, rows, ex, "run2", "student", self_verify=True) == out
    assert store.count("requests") == n_req


# --- debiasing the label prior ----------------------------------------------------------


class YesBiased(Counting):
    """Prefers "Yes" whatever the input (log-odds +0.7 on a content-free input) but leans to the
    truth: +0.8 for even numbers, +0.4 for odd ones. Raw answers are always "Yes"."""

    def score_continuations(self, prompt, continuations):
        self.scored += 1
        question = prompt.rsplit("Question: ", 1)[1].split("\nOptions:")[0]
        words = question.split()
        odds = 0.7 if len(words) < 2 else (0.8 if int(words[1]) % 2 == 0 else 0.4)
        return [-0.2 if c.strip() == "Yes" else -0.2 - odds for c in continuations]


@pytest.mark.parametrize("debias", ["content-free", "batch"])
def test_debias_removes_a_label_prior(setup, debias):
    store, rows, ex = setup
    raw = answer_items(store, YesBiased("raw", {}), rows, ex[:1], "run1", "teacher")
    assert {p["answer"] for p in raw} == {"Yes"}
    model = YesBiased(f"m-{debias}", {})
    out = answer_items(store, model, rows, ex[:1], "run1", "teacher", debias=debias)
    assert all(p["correct"] for p in out)  # the bias is gone, the input signal decides
    extra_calls = 3 if debias == "content-free" else 0  # "N/A", "" and "[MASK]" once per label set
    assert model.scored == len(rows) + extra_calls
    free = store.query("SELECT * FROM requests WHERE purpose = 'eval-content-free' AND model = ?", [model.name])
    assert len(free) == extra_calls
    again = YesBiased(f"m-{debias}", {})
    assert answer_items(store, again, rows, ex[:1], "run2", "teacher", debias=debias) == out
    assert again.scored == 0  # priors come from the store too


def test_batch_debias_uses_only_calibration_rows():
    def req(p_yes):
        return {"extra": {"options": [{"token_logprobs": [math.log(p_yes)]}, {"token_logprobs": [math.log(1 - p_yes)]}]}}
    rows = [PromptRow(id=f"r{i}", source="test", task="yesno", input=f"q{i}", gold="Yes", split=split,
                      choices=["Yes", "No"]) for i, split in enumerate(["calibration", "calibration", "test", "train"])]
    prior = batch_priors([req(0.8), req(0.6), req(0.01), req(0.99)], rows)
    np.testing.assert_allclose(np.exp(prior[("Yes", "No")]), [0.7, 0.3])  # test and train rows ignored


def test_debias_refuses_tasks_without_a_shared_label_set(store):
    rows = [PromptRow(id=f"r{i}", source="test", task="mc", input=f"q{i}", gold=f"a{i}", split="calibration",
                      choices=[f"a{i}", f"b{i}"]) for i in range(25)]
    with pytest.raises(DistillError, match="25 different option lists: drop --debias"):
        answer_items(store, Counting("m", {}), rows, [[]], "run1", "teacher", debias="batch")
    with pytest.raises(DistillError, match="unknown debias 'prior'"):
        answer_items(store, Counting("m", {}), rows, [[]], "run1", "teacher", debias="prior")


# --- batched scoring across items ---------------------------------------------------------


class BatchScripted(Counting):
    """A scripted model with continuation_details_batch: records the chunks it is given."""

    score_token_budget = 40

    def __init__(self, name, choice_scores, fail_on_call=None):
        super().__init__(name, choice_scores)
        self.chunks, self.fail_on_call = [], fail_on_call

    def continuation_details_batch(self, items):
        if self.fail_on_call is not None and len(self.chunks) + 1 == self.fail_on_call:
            raise KeyboardInterrupt  # as if killed while this chunk was in flight
        self.chunks.append([p for p, _ in items])
        return [[{"token_logprobs": [s], "top2_margins": []} for s in self.score_continuations(p, c)]
                for p, c in items]


def test_batched_scoring_chunks_by_token_budget_longest_first(setup):
    store, rows, ex = setup
    model = BatchScripted("stu", {"Yes": YES, "No": NO})
    out = answer_items(store, model, rows, ex[:1], "run1", "teacher")
    prompts = [p for chunk in model.chunks for p in chunk]
    assert sorted(prompts) == sorted(mc_prompt(r, ex[0]) for r in rows)  # every item once
    lengths = [len(p.split()) for p in prompts]
    assert lengths == sorted(lengths, reverse=True)  # sorted by length: little padding
    for chunk in model.chunks:  # longest prompt x option rows within the budget (one item may exceed it)
        assert len(chunk) == 1 or len(chunk[0].split()) * 2 * len(chunk) <= model.score_token_budget
    assert len(model.chunks) > 1
    assert all(p["answer"] == "Yes" for p in out)


def test_a_kill_during_batched_scoring_loses_only_the_chunk_in_flight(setup):
    store, rows, ex = setup
    model = BatchScripted("stu", {"Yes": YES, "No": NO}, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        answer_items(store, model, rows, ex[:1], "run1", "teacher")
    stored = store.count("requests")
    assert stored == sum(len(c) for c in model.chunks) > 0  # the two finished chunks are in the store
    again = BatchScripted("stu", {"Yes": YES, "No": NO})
    answer_items(store, again, rows, ex[:1], "run2", "teacher")
    assert sum(len(c) for c in again.chunks) == len(rows) - stored  # only what was lost runs again


class PerItemOnly:
    """A LocalGenerator seen without continuation_details_batch: the lm-eval-harness-style per-item path."""

    def __init__(self, gen):
        self.gen, self.name, self.tokenizer = gen, gen.name, gen.tokenizer

    def continuation_details(self, prompt, continuations):
        return self.gen.continuation_details(prompt, continuations)


def test_batched_local_scoring_stores_what_the_per_item_path_stores(tmp_path, monkeypatch):
    """Same request keys, prompt tokens, answers and (within 1e-4) per-token option details."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    from store.store import Store
    from clients.local import LocalGenerator

    gen = LocalGenerator("tiny-random")
    gen.score_token_budget = 300  # several chunks
    train, held = split_rows(60)
    ex = exemplar_sets(train, shots=2, variants=1)
    rows = [dataclasses.replace(r, choices=["Yes", "No", "not sure at all"]) for r in held[:12]]
    stored = {}
    for name, model in (("batched", gen), ("per-item", PerItemOnly(gen))):
        with Store(tmp_path / f"{name}.duckdb") as s:
            answer_items(s, model, rows, ex, "run1", "teacher", style="cloze")
            stored[name] = {r["key"]: r for r in s.query("SELECT * FROM requests")}
    assert stored["batched"].keys() == stored["per-item"].keys() and len(stored["batched"]) == len(rows)
    for key, b in stored["batched"].items():
        s = stored["per-item"][key]
        assert (b["prompt_tokens"], b["completion_tokens"], b["response"]) == (
            s["prompt_tokens"], s["completion_tokens"], s["response"])
        for ob, os_ in zip(json.loads(b["extra"])["options"], json.loads(s["extra"])["options"]):
            assert ob["token_logprobs"] == pytest.approx(os_["token_logprobs"], abs=1e-4)
            assert ob["top2_margins"] == pytest.approx(os_["top2_margins"], abs=1e-4)
