"""Purification methods: provenance per row, routers learn which teacher to trust, aggregation."""
import json

import pytest

from curation import Curation
from curation.purify import METHODS, purify
from core.errors import DistillError
from synth.cot import CotParams, generate_traces
from tests.doubles import ScriptedTeacher

pytest.importorskip("sentence_transformers")


@pytest.fixture
def two_teachers(store, pool):
    # "nay" is right exactly on the No questions, "yea" on the Yes questions: which one to trust
    # depends on the question, which is what a router has to learn from the train split.
    for name, answer in (("nay", "No"), ("yea", "Yes")):
        for split in ("train", "calibration"):
            generate_traces(store, ScriptedTeacher(name, [f"I think so.\nAnswer: {answer}"]), pool,
                            CotParams(num_samples=1), run_id="r", split=split)
    c = Curation(store, pool)
    c.verify()
    return c


def _accuracy(store, method, split="calibration"):
    rows = store.query("""SELECT s.answer, p.gold FROM purified u JOIN samples s ON s.id = u.sample_id
                          JOIN prompts p ON p.id = u.prompt_id WHERE u.method = ? AND p.split = ?""", [method, split])
    return sum(r["answer"] == r["gold"] for r in rows) / len(rows), len(rows)


def test_routers_learn_which_teacher_to_trust(two_teachers):
    store = two_teachers.store
    n_cal = len({r["prompt_id"] for r in store.query(
        "SELECT s.prompt_id FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.split = 'calibration'")})
    acc = {}
    for method in ("majority", "plackett_luce", "classifier_router", "similarity_router", "bandit"):
        out = two_teachers.purify(method, splits=("calibration",), gold_splits=(), require_verified=False)
        acc[method], n = _accuracy(store, method)
        assert out["selected"] == n == n_cal
    # The teachers always disagree and each is right half the time: a vote is a coin flip,
    # a router that reads the question is right nearly always.
    assert acc["similarity_router"] >= 0.9 and acc["classifier_router"] >= 0.9, acc
    assert acc["similarity_router"] > acc["majority"] + 0.25, acc


def test_rows_record_provenance_and_verified_first_uses_gold_on_train(two_teachers):
    two_teachers.purify("classifier_router", splits=("train",))
    detail = json.loads(two_teachers.store.query("SELECT detail FROM purified LIMIT 1")[0]["detail"])
    for key in ("candidates", "teachers", "support", "chosen_teacher", "scores", "answer_key", "verified"):
        assert key in detail
    two_teachers.purify("verified_first")
    acc, n = _accuracy(two_teachers.store, "verified_first", split="train")
    assert acc == 1.0 and n > 0
    frame = two_teachers.purified("verified_first")
    assert len(frame) == n and set(frame["teacher"]) == {"nay", "yea"}


def test_require_verified_drops_known_wrong_picks_on_train(store, pool):
    generate_traces(store, ScriptedTeacher("nay", ["Hm.\nAnswer: No"]), pool, CotParams(num_samples=1), run_id="r")
    c = Curation(store, pool)
    c.verify()
    out = c.purify("majority")
    assert out["selected"] == store.count("verdicts", "verifier = 'answer_match' AND passed")
    assert c.purify("majority", require_verified=False)["selected"] == out["prompts"]


def test_llm_aggregation_fuses_and_reverifies(two_teachers):
    fuser = ScriptedTeacher("fuser", ["Both solutions were compared; density decides.\nAnswer: No"])
    out = two_teachers.purify("llm_aggregate", aggregator=fuser, require_verified=False)
    store = two_teachers.store
    fused = store.query("SELECT s.*, r.extra FROM samples s JOIN requests r ON r.key = s.request_key "
                        "WHERE s.kind = 'aggregate'")
    assert out["selected"] == len(fused) > 0 and fuser.calls == len(fused)
    assert all(len(json.loads(f["extra"])["sources"]) == 2 and f["parent_id"] for f in fused)
    assert store.count("verdicts", "sample_id IN (SELECT id FROM samples WHERE kind = 'aggregate')") == len(fused)
    again = two_teachers.purify("llm_aggregate", aggregator=fuser, require_verified=False)
    assert again["selected"] == out["selected"] and fuser.calls == len(fused)  # cached: no second call


def test_bad_method_and_missing_verdicts_are_clear_errors(store, pool):
    generate_traces(store, ScriptedTeacher("t", ["Hm.\nAnswer: No"]), pool, CotParams(num_samples=1), run_id="r")
    with pytest.raises(DistillError, match="unknown purification method"):
        purify(store, pool, "r", "telepathy")
    with pytest.raises(DistillError, match="no verdicts|learns from verdicts"):
        purify(store, pool, "r", "classifier_router")
    assert "llm_aggregate" in METHODS and store.count("purified") == 0


def test_plackett_luce_ranks_teachers_by_judge_scores_when_present(two_teachers):
    store = two_teachers.store
    # A judge that (wrongly) loves "yea": its scores, not the verdicts, set the worths.
    store.add_verdicts([dict(sample_id=s["id"], verifier="judge:fake", verifier_version="1", passed=None,
                             score=0.9 if s["teacher"] == "yea" else 0.1, detail="", run_id="j")
                        for s in store.samples(pool=two_teachers.pool)])
    two_teachers.purify("plackett_luce", splits=("calibration",), gold_splits=(), require_verified=False)
    detail = json.loads(store.query("SELECT detail FROM purified WHERE method = 'plackett_luce' LIMIT 1")[0]["detail"])
    assert detail["scores"]["yea"] > 0.9 > detail["scores"]["nay"]


def test_purify_bench_on_a_pool_without_test_traces_is_a_clear_error(two_teachers, tmp_path, capsys):
    from distill.cli import main

    path = two_teachers.store.path
    two_teachers.close()
    code = main(["curate", "purify-bench", "yesno", "--store", str(path), "--bench-out", str(tmp_path)])
    assert code == 2 and "needs traces on both the train and the test split" in capsys.readouterr().err


@pytest.mark.slow
def test_llm_aggregation_with_a_real_local_model(store, pool):
    from clients.teachers import get_teacher

    for name, answer in (("nay", "No"), ("yea", "Yes")):
        generate_traces(store, ScriptedTeacher(name, [f"Think about it.\nAnswer: {answer}"]), pool,
                        CotParams(num_samples=1), run_id="r", limit=4)
    c = Curation(store, pool)
    c.verify()
    fuser = get_teacher("smollm2-135m-instruct")
    out = c.purify("llm_aggregate", aggregator=fuser, require_verified=False, max_new_tokens=48)
    fused = store.query("SELECT s.*, r.rendered, r.completion_tokens FROM samples s "
                        "JOIN requests r ON r.key = s.request_key WHERE s.kind = 'aggregate'")
    assert len(fused) == 4 and all(f["teacher"] == "smollm2-135m-instruct" for f in fused)
    assert all("Solution 2:" in f["rendered"] and 0 < f["completion_tokens"] <= 48 for f in fused)
    # Whatever the small model wrote is kept: parsed answers are verified, the rest keep their parse error.
    verdicts = store.count("verdicts", "sample_id IN (SELECT id FROM samples WHERE kind = 'aggregate')")
    assert verdicts == 4 and out["selected"] == sum(f["answer"] is not None for f in fused)
    assert all(f["answer"] is not None or f["parse_error"] for f in fused)


def test_word_answers_to_multiple_choice_questions_are_candidates(store):
    # answer_key is for math and yes/no and finds no key in "osmosis": option answers vote as text.
    from prompts.rows import PromptRow, split_for, stable_id
    rows = []
    for i in range(12):
        text = f"Water crosses a membrane by what process? ({i})"
        rid = stable_id("words", text)
        rows.append(PromptRow(id=rid, source="test", task="words", input=text, gold="osmosis",
                              split=split_for(rid, 0.0, 0.0), choices=["osmosis", "mutation"]))
    store.add_prompts(rows, "words")
    for name, answer in (("right", "osmosis"), ("wrong", "mutation")):
        generate_traces(store, ScriptedTeacher(name, [f"Because.\nAnswer: {answer}"]), "words",
                        CotParams(num_samples=1), run_id="r")
    c = Curation(store, "words")
    c.verify()
    out = purify(store, "words", "r", "verified_first")
    assert out["selected"] == 12 and out["by_teacher"] == {"right": 12}


def test_every_method_is_one_registry_entry():
    from curation.purify import LEARNED, METHODS, PICKERS

    assert METHODS == (*PICKERS, "llm_aggregate") and set(LEARNED) < set(PICKERS)
