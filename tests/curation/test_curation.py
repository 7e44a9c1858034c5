import json

import pytest

from curation.dedup import dedup_samples
from curation.export import export_sft
from curation.purify import select_traces
from curation.verify import answers_match, verify_samples
from core.errors import DistillError
from synth.cot import CotParams, generate_traces
from tests.doubles import ScriptedTeacher


@pytest.mark.parametrize("answer,gold,ok", [
    ("Yes", "yes", True), ("No.", "No", True), ("1/2", "0.5", True), ("1,000", "1000", True),
    ("3", "4", False), (None, "Yes", False), ("Yes", "No", False)])
def test_answers_match(answer, gold, ok):
    assert answers_match(answer, gold) is ok


def _synth(store, pool):
    # Teacher A always says No (right on half the rows), with duplicate and near-duplicate wording;
    # teacher B always says Yes.
    a = ScriptedTeacher("teacher-a", ["Water is denser than a pear, so it floats.\nAnswer: No",
                                      "Water is denser than a pear, so it floats!\nAnswer: No"])
    b = ScriptedTeacher("teacher-b", ["It seems likely.\nAnswer: Yes", "garbage"])
    generate_traces(store, a, pool, CotParams(num_samples=2), run_id="ra")
    generate_traces(store, b, pool, CotParams(num_samples=2), run_id="rb")


def test_verify_then_dedup_then_select_then_export(store, pool, tmp_path):
    _synth(store, pool)
    v = verify_samples(store, pool, "rv")
    assert v["new_verdicts"] == store.count("samples")
    assert verify_samples(store, pool, "rv2")["new_verdicts"] == 0  # cached per verifier version

    d = dedup_samples(store, pool, "rd")
    # Teacher A's two texts differ only in punctuation: exact dedup (normalised) merges them.
    assert d["exact_duplicates"] >= len(store.prompts(pool, split="train"))
    kept = store.query("SELECT count(*) AS n FROM dedup WHERE method = 'minhash' AND keep")[0]["n"]
    assert kept < store.count("samples")

    s = select_traces(store, pool, "rs")
    train = store.prompts(pool, split="train")
    assert s["selected"] == len(train)  # every train prompt has exactly one verified teacher
    chosen = store.query("SELECT s.answer, p.gold FROM purified u JOIN samples s ON s.id = u.sample_id "
                         "JOIN prompts p ON p.id = u.prompt_id")
    assert all(c["answer"] == c["gold"] for c in chosen), "verified traces are selected first"

    out = export_sft(store, pool, tmp_path / "sft.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert out["rows"] == len(lines) == len(train)
    assert [m["role"] for m in lines[0]["messages"]] == ["user", "assistant"]
    assert lines[0]["messages"][1]["content"].endswith(("Answer: Yes", "Answer: No"))
    test_inputs = {r.input for r in store.prompts(pool, split="test")}
    assert not any(m["content"].find(t) >= 0 for line in lines for m in line["messages"] for t in test_inputs)


def test_minhash_clusters_near_duplicates_only(store, pool):
    # One word changed in 40: 3-gram Jaccard (38 - 3) / (38 + 3) = 0.85, above the 0.8 threshold.
    base = ("the bridge was built in 1890 by a team of twelve engineers from the city and it still stands today "
            "because the stone they chose was hard granite from the northern quarry which resists both rain and frost")
    near = base.replace("twelve", "eleven")
    other = "cats sleep for most of the day because hunting takes a lot of energy and they need to rest"
    t = ScriptedTeacher("t", [f"{base}\nAnswer: No", f"{near}\nAnswer: No", f"{other}\nAnswer: No"])
    generate_traces(store, t, pool, CotParams(num_samples=3), run_id="r")
    verify_samples(store, pool, "rv")
    dedup_samples(store, pool, "rd")
    per_prompt = store.query("SELECT s.prompt_id, count(DISTINCT d.cluster_id) AS clusters FROM dedup d "
                             "JOIN samples s ON s.id = d.sample_id WHERE d.method = 'minhash' GROUP BY 1")
    assert per_prompt and all(r["clusters"] == 2 for r in per_prompt)
    params = store.query("SELECT params FROM dedup WHERE method = 'minhash' LIMIT 1")[0]["params"]
    assert '"num_perm": 128' in params and "datasketch" in params


def test_export_without_selection_is_a_clear_error(store, pool, tmp_path):
    with pytest.raises(DistillError, match="no 'verified_first' traces"):
        export_sft(store, pool, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
