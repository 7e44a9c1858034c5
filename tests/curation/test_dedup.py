"""Incremental dedup over signatures persisted in the store; best member kept, not first seen."""
import json

import pytest

from curation.dedup import DedupParams, dedup_samples
from curation.minhash import MinHashParams
from curation.verify import verify_samples
from synth.cot import CotParams, generate_traces
from tests.doubles import ScriptedTeacher

WORDS = ("the river carries fine silt from the mountains down to the plain where farmers have grown rice "
         "for centuries because the soil stays wet and rich while the dry hills around the valley only feed "
         "goats and a few olive trees that the families harvest together every autumn before the first rains "
         "arrive from the sea and fill the channels again").split()
LONG = " ".join(WORDS)  # 62 words: one changed word moves 3-gram Jaccard to ~0.9


def _trace(text: str, answer: str) -> str:
    return f"{text}\nAnswer: {answer}"


def _synth(store, pool, name, texts, run):
    generate_traces(store, ScriptedTeacher(name, texts), pool, CotParams(num_samples=len(texts)), run_id=run)


def _dedup_rows(store):
    return store.query("SELECT sample_id, method, cluster_id, keep, run_id FROM dedup ORDER BY ALL")


def test_rerun_changes_nothing_and_new_rows_cluster_against_old(store, pool):
    # Teacher A: the same trace twice, once with different punctuation (an exact duplicate).
    _synth(store, pool, "a", [_trace(LONG, "maybe"), _trace(LONG.replace(" the plain", ", the plain!"), "maybe")], "ra")
    first = dedup_samples(store, pool, "d1")
    n_prompts = store.query("SELECT count(DISTINCT prompt_id) AS n FROM samples")[0]["n"]
    assert first["new"] == 2 * n_prompts and first["exact_duplicates"] == n_prompts
    before, index_before = _dedup_rows(store), store.count("dedup_index")

    again = dedup_samples(store, pool, "d2")
    assert again["new"] == 0 and _dedup_rows(store) == before and store.count("dedup_index") == index_before

    # Teacher B: a near duplicate (one word dropped: shorter, so it is the better member).
    shorter = LONG.replace(" fine silt", " silt")
    _synth(store, pool, "b", [_trace(shorter, "maybe")], "rb")
    third = dedup_samples(store, pool, "d3")
    assert third["new"] == n_prompts
    assert store.count("dedup_index", "run_id = 'd1'") == index_before  # old signatures were not recomputed
    rows = store.query("""SELECT s.teacher, d.keep, d.cluster_id, d.run_id FROM dedup d JOIN samples s ON s.id = d.sample_id
                          WHERE d.method = 'minhash'""")
    clusters = {r["cluster_id"] for r in rows}
    assert len(clusters) == n_prompts  # each prompt's three traces form one cluster
    kept = [r for r in rows if r["keep"]]
    assert len(kept) == n_prompts and all(r["teacher"] == "b" for r in kept)  # the best, not the first seen
    assert all(r["run_id"] == "d3" for r in rows)  # touched clusters were rewritten by the new run
    # Exact dedup is unaffected by B (B's text is not an exact copy).
    assert dedup_samples(store, pool, "d4")["new"] == 0


def test_verified_member_is_kept_even_when_longer(store, pool):
    _synth(store, pool, "a", [_trace(LONG, "Yes"), _trace(LONG + " again", "No")], "ra")
    verify_samples(store, pool, "rv")
    dedup_samples(store, pool, "rd")
    rows = store.query("""SELECT d.keep, s.answer, p.gold FROM dedup d JOIN samples s ON s.id = d.sample_id
                          JOIN prompts p ON p.id = s.prompt_id WHERE d.method = 'minhash'""")
    assert rows and all(r["keep"] == (r["answer"] == r["gold"]) for r in rows)


def test_scope_prompt_keeps_the_same_text_on_different_prompts(store, pool):
    _synth(store, pool, "a", [_trace(LONG, "maybe")], "ra")
    dedup_samples(store, pool, "rd")
    assert store.count("dedup", "method = 'minhash' AND NOT keep") == 0
    wide = DedupParams(MinHashParams(ngram=3, threshold=0.8), scope="pool")
    out = dedup_samples(store, pool, "rd2", wide)
    n_prompts = store.query("SELECT count(DISTINCT prompt_id) AS n FROM samples")[0]["n"]
    assert out["near_duplicates"] == n_prompts - 1  # one kept for the whole pool


def test_parameters_are_recorded(store, pool):
    _synth(store, pool, "a", [_trace(LONG, "maybe")], "ra")
    dedup_samples(store, pool, "rd")
    params = json.loads(store.query("SELECT params FROM dedup_params")[0]["params"])
    for key in ("num_perm", "bands", "rows", "threshold", "seed", "ngram", "shingle", "datasketch", "scheme", "scope"):
        assert key in params
    row = json.loads(store.query("SELECT params FROM dedup LIMIT 1")[0]["params"])
    assert row["params_hash"] == store.query("SELECT params_hash FROM dedup_params")[0]["params_hash"]


def test_embedding_dedup_is_incremental(store, pool):
    pytest.importorskip("sentence_transformers")
    from curation.dedup import embedding_dedup

    _synth(store, pool, "a", [_trace(LONG, "maybe"), _trace("Completely unrelated: cats sleep all day.", "maybe")], "ra")
    first = embedding_dedup(store, pool, "e1", threshold=0.9)
    assert first["near_duplicates"] == 0  # the two traces of a prompt mean different things
    _synth(store, pool, "b", [_trace(LONG.replace("rice", "wheat"), "maybe")], "rb")
    second = embedding_dedup(store, pool, "e2", threshold=0.9)  # cosine 0.94 here
    n_prompts = store.query("SELECT count(DISTINCT prompt_id) AS n FROM samples")[0]["n"]
    assert second["new"] == n_prompts and second["near_duplicates"] == n_prompts
    assert embedding_dedup(store, pool, "e3", threshold=0.9)["new"] == 0
