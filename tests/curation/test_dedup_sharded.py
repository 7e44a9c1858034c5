"""Sharded dedup (signatures computed by parallel workers, pairs found globally in the store) gives the
same clusters and the same kept members as one process on the same samples."""
import random

import pytest

from curation.dedup import DedupParams, dedup_samples
from curation.minhash import MinHashParams
from store.store import Store
from synth.cot import CotParams, generate_traces
from tests.doubles import ScriptedTeacher

VOCAB = [f"w{i}" for i in range(400)]


def _texts(n: int, seed: int) -> list[str]:
    """n traces: a third are near copies (a word or two changed) of earlier ones, some exact copies."""
    rng, out = random.Random(seed), []
    for i in range(n):
        if out and i % 3 == 0:
            words = rng.choice(out).split()
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
            out.append(" ".join(words))
        elif out and i % 7 == 0:
            out.append(rng.choice(out))
        else:
            out.append(" ".join(rng.choice(VOCAB) for _ in range(40)))
    return [f"{t}\nAnswer: yes" for t in out]


def _dedup(path, rows, **kw) -> list[dict]:
    with Store(path) as store:
        store.add_prompts(rows, "yesno")
        generate_traces(store, ScriptedTeacher("t", _texts(24, seed=1)), "yesno", CotParams(num_samples=24), run_id="r")
        out = dedup_samples(store, "yesno", "d", DedupParams(MinHashParams(ngram=3, threshold=0.7), scope="pool"), **kw)
        assert out["near_duplicates"] > 0 and out["exact_duplicates"] > 0
        return store.query("SELECT sample_id, method, cluster_id, keep FROM dedup ORDER BY ALL")


def test_two_local_workers_cluster_as_one_process(tmp_path, rows):
    one = _dedup(tmp_path / "one.duckdb", rows)
    assert _dedup(tmp_path / "two.duckdb", rows, workers=2, executor="local") == one


@pytest.mark.slow
def test_ray_workers_cluster_as_one_process(tmp_path, rows):
    ray = pytest.importorskip("ray")
    try:
        one = _dedup(tmp_path / "one.duckdb", rows)
        assert _dedup(tmp_path / "ray.duckdb", rows, workers=2, executor="ray") == one
    finally:
        ray.shutdown()
