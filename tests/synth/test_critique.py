import json

import pytest

from synth.cot import CotParams, generate_traces
from synth.critique import critique_traces, judge_pairs, judge_traces, parse_ratings, revise_traces
from tests.doubles import ScriptedTeacher


@pytest.fixture
def traced(store, pool):
    teacher = ScriptedTeacher("teacher", ["Because of density.\nAnswer: No", "It just is.\nAnswer: Yes"])
    generate_traces(store, teacher, pool, CotParams(num_samples=2), run_id="r1")
    return pool


def test_critique_then_revision_chain_by_parent_ids(store, traced):
    critic = ScriptedTeacher("critic", [" The density claim is right. Verdict: correct", " rambling without verdict"])
    out = critique_traces(store, critic, traced, "rc")
    n_traces = store.count("samples", "kind = 'cot'")
    assert out["inputs"] == n_traces and store.count("samples", "kind = 'critique'") == n_traces
    bad = store.query("SELECT * FROM samples WHERE kind = 'critique' AND parse_error IS NOT NULL")
    assert bad and all(b["answer"] is None for b in bad), "a critique without verdict is kept with its error"

    reviser = ScriptedTeacher("reviser", [" Pears are less dense than water.\nAnswer: No"])
    revise_traces(store, reviser, traced, "rr")
    chain = store.query("""SELECT r.answer, c.kind AS ckind, t.kind AS tkind FROM samples r
                           JOIN samples c ON c.id = r.parent_id JOIN samples t ON t.id = c.parent_id
                           WHERE r.kind = 'revision'""")
    assert len(chain) == n_traces and all(c["ckind"] == "critique" and c["tkind"] == "cot" for c in chain)
    assert {c["answer"] for c in chain} == {"No"}
    calls = critic.calls
    critique_traces(store, critic, traced, "rc2")
    assert critic.calls == calls, "re-running is all cache hits"


def test_judge_scores_become_verdicts_and_bad_ratings_keep_their_error(store, traced):
    judge = ScriptedTeacher("judge", [" 4\nHonesty: 5\nInstruction following: 3\nTruthfulness: 4", " I like it"])
    out = judge_traces(store, judge, traced, "rj")
    rows = store.query("SELECT * FROM verdicts WHERE verifier = 'judge:judge'")
    assert out["judged"] == len(rows) == store.count("samples", "kind = 'cot'")
    good = [r for r in rows if r["score"] is not None]
    bad = [r for r in rows if r["score"] is None]
    assert good and bad
    assert all(abs(r["score"] - 16 / 20) < 1e-9 and json.loads(r["detail"])["honesty"] == 5 for r in good)
    assert all("unparseable" in r["detail"] for r in bad)


def test_parse_ratings_accepts_lines_or_json():
    assert parse_ratings('{"helpfulness": 5, "honesty": 4, "instruction_following": 3, "truthfulness": 2}') == {
        "helpfulness": 5, "honesty": 4, "instruction following": 3, "truthfulness": 2}
    assert parse_ratings("Helpfulness: 9") is None


def test_pairwise_judging_is_position_swapped(store, traced):
    # A judge that always prefers whatever is shown first is inconsistent under swapping: no pairs.
    biased = ScriptedTeacher("biased", ["A"], choice_scores={"A": -0.1, "B": -3.0})
    out = judge_pairs(store, biased, traced, "rp")
    assert out["compared"] > 0 and out["consistent_pairs"] == 0
    assert store.count("pairs", "strategy = 'judge_pairwise'") == 0
