"""Vectorised MinHash (curation.minhash): estimates, determinism, datasketch parity, the LSH index."""
import numpy as np
import pytest

from core.errors import DistillError
from datasketch import MinHash

from curation import minhash
from curation.minhash import (
    LshIndex,
    MinHashParams,
    band_hashes,
    estimate_jaccard,
    minhash_of_hashes,
    normalise,
    signatures,
)

RNG = np.random.default_rng(7)
VOCAB = [f"w{i}" for i in range(3000)]


def doc(n_words: int = 120) -> str:
    return " ".join(VOCAB[i] for i in RNG.integers(0, len(VOCAB), n_words))


def edit(text: str, n_edits: int) -> str:
    words = text.split()
    for i in RNG.choice(len(words), n_edits, replace=False):
        words[i] = "zz" + words[i]
    return " ".join(words)


def shingle_set(text: str, n: int = 5) -> set:
    words = normalise(text).split()
    return {tuple(words)} if len(words) < n else {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def test_estimate_tracks_exact_jaccard():
    params = MinHashParams(num_perm=256)
    pairs = [(t, edit(t, k)) for k in (0, 1, 2, 4, 8, 16, 30, 60) for t in [doc() for _ in range(3)]]
    sigs = signatures([x for pair in pairs for x in pair], params)
    est = estimate_jaccard(sigs[0::2], sigs[1::2])
    true = np.array([jaccard(a, b) for a, b in pairs])
    assert true.min() < 0.2 and true.max() == 1.0  # the pairs span the range
    # standard error is sqrt(J(1-J)/256) <= 0.031
    assert np.abs(est - true).max() < 0.1
    assert np.abs(est - true).mean() < 0.03


def test_signatures_shape_dtype_and_normalisation():
    texts = ["Hello, World!  again", "hello world again", "HELLO\u00a0world\tagain.", "Ça va? très bien", "ça va très bien"]
    sigs = signatures(texts, MinHashParams(ngram=2))
    assert sigs.shape == (5, 128) and sigs.dtype == np.uint32
    assert (sigs[0] == sigs[1]).all() and (sigs[1] == sigs[2]).all()
    assert (sigs[3] == sigs[4]).all() and not (sigs[0] == sigs[3]).all()
    # words are exactly normalise(text).split(), whatever the whitespace or punctuation
    ascii_soup = "".join(f"{chr(c)}w{c} " if c % 3 else f"w{c}{chr(c)}x " for c in range(128))  # every ASCII byte
    messy = ["a\u2003b,c d", " x\n\ny z ", "tab\tsep\x1fctl", "«quoted» — dash", "e\u0301 accents ß", ascii_soup,
             "Mixed ASCII, then é: «Ünïcode»\u00a0words"]
    assert (signatures(messy, MinHashParams(ngram=2)) == signatures([normalise(t) for t in messy], MinHashParams(ngram=2))).all()


def test_deterministic_and_independent_of_batch(monkeypatch):
    texts = [doc(RNG.integers(0, 200)) for _ in range(300)] + ["", "one", "a\x1eb c"]
    for params in (MinHashParams(), MinHashParams(shingle="char", ngram=4, num_perm=64)):
        whole = signatures(texts, params)
        assert (whole == signatures(texts, params)).all()
        one_by_one = np.vstack([signatures([t], params) for t in texts[::37]])
        assert (whole[::37] == one_by_one).all()
        monkeypatch.setattr(minhash, "_CHARS_PER_BATCH", 500)  # many internal batches
        monkeypatch.setattr(minhash, "_SHINGLES_PER_CHUNK", 100)  # chunks that cut docs in two
        assert (signatures(texts[::-1], params)[::-1] == whole).all()
        monkeypatch.undo()
    assert not (signatures(texts[:1], MinHashParams(seed=2)) == signatures(texts[:1])).all()


def test_permutation_stage_matches_datasketch_affine32():
    hashes = RNG.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)
    starts = np.array([0, 100, 101, 250])
    ours = minhash_of_hashes(hashes, starts, 128, seed=3)
    for d, (s, e) in enumerate(zip(starts, [100, 101, 250, 300])):
        m = MinHash(num_perm=128, seed=3, scheme="affine32", hashfunc=lambda v: v)
        m.update_batch([int(v) for v in hashes[s:e]])
        assert (m.hashvalues == ours[d]).all()


def test_empty_and_short_docs():
    sigs = signatures(["", "", "word", "Word!", "other", "two words", "two words here"], MinHashParams())
    assert (sigs[0] == sigs[1]).all() and (sigs[2] == sigs[3]).all()
    assert estimate_jaccard(sigs[2], sigs[4]) < 0.1 and estimate_jaccard(sigs[0], sigs[2]) < 0.1
    assert estimate_jaccard(sigs[5], sigs[6]) < 0.1  # one shingle each, different ones
    assert signatures([], MinHashParams()).shape == (0, 128)
    index = LshIndex()
    assert index.add(None, sigs[:2]) == [(0, 1, 1.0)]
    assert index.add(None, sigs[:0]) == []


def test_band_hashes_and_params():
    params = MinHashParams(threshold=0.8)
    bands, rows = params.resolved()
    assert bands * rows <= 128 and (bands, rows) == (14, 9)
    assert MinHashParams(false_negative_weight=0.5).resolved() == (9, 13)  # datasketch MinHashLSH's own
    assert MinHashParams(bands=16, rows=8).resolved() == (16, 8)
    record = params.as_record()
    assert record["scheme"] == minhash.SCHEME and record["datasketch"] and record["bands"] == 14
    sigs = signatures([doc(), doc()], params)
    twin = sigs[1].copy()
    twin[rows:] = sigs[0][rows:]  # agrees with doc 0 everywhere but band 0
    bh = band_hashes(np.vstack([sigs, twin]), bands, rows)
    assert bh.shape == (3, bands) and bh.dtype == np.uint64
    assert (bh[2, 1:] == bh[0, 1:]).all() and bh[2, 0] != bh[0, 0] and not (bh[0] == bh[1]).any()
    assert len(set(bh[0].tolist())) == bands  # the band number is mixed in


def test_index_finds_planted_near_duplicates_only():
    base = [doc() for _ in range(400)]
    near = {i: edit(base[i], 1) for i in range(0, 400, 20)}  # J ~ 0.9
    far = {i: edit(base[i], 12) for i in range(10, 400, 20)}  # J ~ 0.35
    texts = base + list(near.values()) + list(far.values())
    ids = [f"b{i}" for i in range(400)] + [f"n{i}" for i in near] + [f"f{i}" for i in far]
    index = LshIndex(MinHashParams(threshold=0.8))
    pairs = index.add(ids, signatures(texts))
    assert {(a, b) for a, b, _ in pairs} == {(f"b{i}", f"n{i}") for i in near}
    assert all(s >= 0.8 for _, _, s in pairs)
    clusters = index.clusters()
    assert clusters["n20"] == "b20" and clusters["f10"] == "f10" and len(set(clusters.values())) == len(texts) - 20


def test_candidates_below_threshold_are_verified_away():
    # 32 bands of 4 rows make pairs at J ~ 0.5 band-collide most of the time (1 - (1 - 0.5^4)^32 = 0.87)
    base = [doc() for _ in range(40)]
    half = [edit(t, 8) for t in base]
    assert 0.4 < np.mean([jaccard(a, b) for a, b in zip(base, half)]) < 0.6
    sigs = signatures(base + half)
    keys = band_hashes(sigs, 32, 4)
    assert sum((keys[i] == keys[40 + i]).any() for i in range(40)) > 20  # they are candidates
    assert LshIndex(MinHashParams(threshold=0.8, bands=32, rows=4)).add(None, sigs) == []


def test_incremental_add_links_new_docs_to_old_ones():
    old = [doc() for _ in range(500)]
    index = LshIndex(MinHashParams(threshold=0.7))
    for i in range(0, 500, 100):  # several runs, merged as they grow
        assert index.add(range(i, i + 100), signatures(old[i:i + 100])) == []
    new = [edit(old[42], 1), doc(), edit(old[499], 2), old[42]]
    found = index.add(["x42", "fresh", "x499", "y42"], signatures(new))
    assert {(a, b) for a, b, _ in found} == {(42, "x42"), (499, "x499"), (42, "y42"), ("x42", "y42")}
    clusters = index.clusters()
    assert clusters["y42"] == clusters["x42"] == 42 and clusters["fresh"] == "fresh" and len(index) == 504


def test_index_duplicates_false_keeps_first_only():
    text = doc()
    index = LshIndex(index_duplicates=False)
    sigs = signatures([text] * 5)
    assert [(a, b) for a, b, _ in index.add(None, sigs[:3])] == [(0, 1), (0, 2), (1, 2)]
    # copies 1 and 2 were not indexed: a later copy pairs with the first only
    assert [(a, b) for a, b, _ in index.add(None, sigs[3:])] == [(0, 3), (0, 4), (3, 4)]
    assert index.add(None, sigs[:2]) == [(0, 5, 1.0), (0, 6, 1.0), (5, 6, 1.0)]  # nothing new indexed
    assert sum(docs.shape[1] for _, docs in index._runs) == 1 and set(index.clusters().values()) == {0}


@pytest.mark.parametrize("bad", ["token", "bytes"])
def test_unknown_shingle_kind_is_refused(bad):
    with pytest.raises(DistillError, match="shingle"):  # refused when the parameters are made
        signatures(["a b c"], MinHashParams(shingle=bad))
