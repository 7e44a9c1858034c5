"""Vectorised MinHash signatures (uint32, (n, num_perm), as datasketch stores them) and LSH, in numpy.

Why not datasketch directly: `MinHash.update_batch` SHA-1-hashes every shingle in a Python loop,
one object per document, and `MinHashLSH` keeps Python dicts of bytes keys per band: 2,000-3,000
docs/s on one core and hundreds of bytes of Python objects per document and band. Here a batch is
array operations end to end: words are found and hashed in the UTF-8 bytes, n-gram hashes are
combined arithmetically, the permutations run over all shingles of a chunk at once, and the LSH
index is sorted numpy arrays. Reused from datasketch: the permutation parameters (signatures
follow its "affine32" scheme bit for bit given the same 32-bit shingle hashes, so
`datasketch.MinHash(scheme="affine32", hashvalues=row)` accepts a row), its MurmurHash3
finaliser `_fmix` (every input bit reaches every output bit), and `_optimal_param`.
"""
from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import datasketch
import numpy as np
from datasketch.lsh import _optimal_param  # private, as is _fmix: requirements.lock pins datasketch
from datasketch.minhash import _fmix

from core.errors import DistillError

SCHEME = "poly64-tokens+poly64-ngrams+datasketch-affine32"  # recorded with results: signatures depend on it
_M64 = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for polynomial n-gram / band hashes
_SHINGLES_PER_CHUNK = 8192  # permuted at once: 8192 x 128 x 4 B = 4 MB (measured best of 1K-16K)
_CHARS_PER_BATCH = 1 << 19  # text tokenised at once: small arrays are faster (cache, no page faults)
_SEP = "\x1e"  # separates the docs of a batch in one string: whitespace, so normalise() drops it
_WHITESPACE = np.zeros(256, bool)  # the ASCII bytes str.split() and \s take for whitespace
_WHITESPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
# normalise()'s [^\w\s] within ASCII: all but letters, digits, "_" and whitespace
_ASCII_PUNCT = bytes(c for c in range(128) if not (chr(c).isalnum() or c == 95 or _WHITESPACE[c]))


@dataclass(frozen=True)
class MinHashParams:
    shingle: str = "word"  # "word": n-grams of words; "char": n-grams of characters
    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1
    bands: int | None = None  # None: datasketch's optimal (bands, rows) for threshold and num_perm
    rows: int | None = None
    # Weight of missed pairs vs band collisions below the threshold in that choice. LshIndex
    # verifies every candidate, so a collision costs only a comparison: favour recall (0.9 gives
    # 14 x 9 at 0.8 rather than datasketch's default 0.5 -> 9 x 13).
    false_negative_weight: float = 0.9

    def __post_init__(self) -> None:  # bad values would mark everything (or nothing) a duplicate
        if self.shingle not in ("word", "char"):
            raise DistillError(f"MinHash shingle {self.shingle!r}: use 'word' or 'char'")
        if not isinstance(self.ngram, int) or self.ngram < 1 or not isinstance(self.num_perm, int) or self.num_perm < 16:
            raise DistillError(f"MinHash needs ngram >= 1 and num_perm >= 16 (got {self.ngram} and {self.num_perm})")
        if not 0 < self.threshold <= 1:
            raise DistillError(f"MinHash threshold must be in (0, 1], got {self.threshold}")

    def resolved(self) -> tuple[int, int]:
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        fn = self.false_negative_weight
        return _optimal_param(self.threshold, self.num_perm, 1 - fn, fn)

    def as_record(self) -> dict:
        bands, rows = self.resolved()
        return dict(asdict(self), bands=bands, rows=rows, scheme=SCHEME, datasketch=datasketch.__version__)


_PUNCT, _SPACES = re.compile(r"[^\w\s]"), re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace (as curation.dedup always has)."""
    return _SPACES.sub(" ", _PUNCT.sub("", text.lower())).strip()


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for every (s, c), without a Python loop."""
    ends = np.cumsum(counts)
    return np.repeat(starts - ends + counts, counts) + np.arange(ends[-1] if len(ends) else 0)


def _token_hashes(texts: Sequence[str], shingle: str) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every token (word or character) of the batch, flat, and tokens per doc."""
    if shingle == "char":
        pieces = [normalise(t) for t in texts]
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        codes = np.frombuffer("".join(pieces).encode("utf-32-le"), np.uint32).astype(np.uint64)
        return _fmix(codes + _M64, 64), lengths
    if shingle != "word":
        raise ValueError(f"shingle must be 'word' or 'char', not {shingle!r}")
    # Words are found and hashed in the UTF-8 bytes with array ops: making 120 Python str objects
    # per doc (str.split) would cost more than all the permutations. ASCII docs are normalised
    # by one bytes.translate over the batch (3x faster than the regex); the others by normalise().
    docs = [t if t.isascii() else normalise(t) for t in texts]
    joined = _SEP.join(docs)
    if joined.count(_SEP) != len(docs) - 1:  # a text holds the separator: normalise() drops it
        joined = _SEP.join(t if t.isascii() and _SEP not in t else normalise(t) for t in texts)
    raw = np.frombuffer(joined.encode().translate(_ASCII_LOWER, _ASCII_PUNCT), np.uint8)
    edge = np.diff(np.concatenate([[True], _WHITESPACE[raw], [True]]).view(np.int8))
    starts, ends = np.flatnonzero(edge == -1), np.flatnonzero(edge == 1)  # word = [start, end)
    lengths = np.bincount(np.searchsorted(np.flatnonzero(raw == ord(_SEP)), starts), minlength=len(texts))
    if not len(starts):
        return np.empty(0, np.uint64), lengths
    # word hash = sum(byte_k * M^(end-1-k)) mod 2^64: a polynomial over the word's own bytes,
    # so it does not depend on where the word sits in the batch.
    size = ends - starts
    at = _ranges(starts, size)
    powers = np.cumprod(np.concatenate([[np.uint64(1)], np.full(size.max() - 1, _M64)]))
    terms = raw[at].astype(np.uint64) * powers[np.repeat(ends - 1, size) - at]
    words = np.add.reduceat(terms, np.cumsum(size) - size)
    return _fmix(words ^ size.astype(np.uint64), 64), lengths


def _shingle_hashes(tokens: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hash of every n-gram of every doc, flat, and where each doc's shingles start.

    An n-gram hash is the polynomial sum(h[i+j] * M^(n-1-j)) mod 2^64 (order-sensitive), computed
    for every position of the flat token array in n vectorised steps; positions whose window runs
    into the next doc are simply not gathered. A doc with fewer than n tokens (empty included) is
    one shingle of all its tokens, as curation.dedup.shingles does.
    """
    starts = np.cumsum(lengths) - lengths
    counts = np.maximum(lengths - n + 1, 1)
    sstarts = np.cumsum(counts) - counts
    out = np.empty(int(counts.sum()), np.uint64)
    full = lengths >= n
    if full.any():
        poly = tokens[: len(tokens) - n + 1].copy()
        for j in range(1, n):
            poly = poly * _M64 + tokens[j: len(tokens) - n + 1 + j]
        out[_ranges(sstarts[full], counts[full])] = poly[_ranges(starts[full], counts[full])]
    for d in np.flatnonzero(~full):  # rare: docs shorter than n tokens; same polynomial, in Python
        h = 0
        for t in tokens[starts[d]: starts[d] + lengths[d]].tolist():
            h = (h * int(_M64) + t) & 0xFFFFFFFFFFFFFFFF
        out[sstarts[d]] = h
    return (_fmix(out, 64) >> np.uint64(32)).astype(np.uint32), sstarts


def minhash_of_hashes(hashes: np.ndarray, starts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """Signatures from 32-bit shingle hashes (flat; doc d's start at starts[d], each has >= 1):
    the same values as datasketch's MinHash(scheme="affine32") updated with those hashes."""
    a, b = (p[:, None] for p in _permutations(num_perm, seed))
    x = _fmix(hashes.astype(np.uint32), 32)  # affine32's pre-mix of each shingle hash
    # Laid out (num_perm, shingles): the per-doc minimum is then a reduceat along contiguous
    # rows, about 6x faster than along axis 0 of (shingles, num_perm).
    sigs = np.full((num_perm, len(starts)), np.iinfo(np.uint32).max, np.uint32)
    buf = np.empty((num_perm, _SHINGLES_PER_CHUNK), np.uint32)
    # Bounded memory: permute a fixed number of shingles at a time. A chunk may cut a doc in two,
    # so each chunk's per-doc minima are folded into the running minimum of the docs it touches.
    for s in range(0, len(x), _SHINGLES_PER_CHUNK):
        e = min(s + _SHINGLES_PER_CHUNK, len(x))
        d0, d1 = np.searchsorted(starts, s, "right") - 1, np.searchsorted(starts, e, "left")
        block = buf[:, : e - s]
        np.multiply(a, x[s:e], out=block)  # (a * x + b) mod 2^32: uint32 arithmetic wraps around
        np.add(block, b, out=block)
        mins = np.minimum.reduceat(block, np.maximum(starts[d0:d1], s) - s, axis=1)
        np.minimum(sigs[:, d0:d1], mins, out=sigs[:, d0:d1])
    return np.ascontiguousarray(sigs.T)


def signatures(texts: Sequence[str], params: MinHashParams = MinHashParams()) -> np.ndarray:
    """MinHash signatures, uint32 (len(texts), num_perm). A doc's row depends only on its text and
    params, not on the rest of the batch. Texts are processed ~0.5M characters at a time, so working
    memory stays at tens of MB however many are passed (the result itself is num_perm * 4 B per doc)."""
    if params.ngram < 1:
        raise ValueError(f"ngram must be >= 1, not {params.ngram}")
    out = np.empty((len(texts), params.num_perm), np.uint32)
    ends = np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))
    i = 0
    while i < len(texts):
        j = max(int(np.searchsorted(ends, ends[i] + _CHARS_PER_BATCH)), i + 1)
        tokens, lengths = _token_hashes(texts[i:j], params.shingle)
        hashes, starts = _shingle_hashes(tokens, lengths, params.ngram)
        out[i:j] = minhash_of_hashes(hashes, starts, params.num_perm, params.seed)
        i = j
    return out


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 per band, (n, bands): two docs share band k's hash iff (barring 2^-64 collisions)
    their signatures agree on that band's rows. The band number is mixed in, so a single column
    of (doc, band_hash) can be self-joined in DuckDB."""
    n = len(sigs)
    v = sigs[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.broadcast_to(_fmix(np.arange(1, bands + 1, dtype=np.uint64), 64), (n, bands)).copy()
    for r in range(rows):
        h = h * _M64 + v[:, :, r]
    return _fmix(h, 64)


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Share of equal signature entries: a row pair gives a float, two (k, P) arrays k of them."""
    agree = np.mean(np.asarray(a) == np.asarray(b), axis=-1)
    return float(agree) if np.ndim(agree) == 0 else agree


def _sort_bands(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for band in range(len(keys)):  # in place, band by band: sort temporaries stay one band big
        order = np.argsort(keys[band], kind="stable")
        keys[band], docs[band] = keys[band][order], docs[band][order]
    return keys, docs


class LshIndex:
    """Incremental banded LSH over signatures, with verification and union-find clusters.

    Each band's (hash, doc) pairs live in sorted numpy runs; a new batch is looked up in every run
    with searchsorted, then appended as a run and merged with the previous one while that is no
    bigger (at most log2(N / batch) runs; a stable sort of two sorted runs is a linear merge).
    Memory per doc: num_perm * 4 B of signature (kept to verify candidates) + bands * 12 B.
    Candidates are kept when their estimated Jaccard is >= threshold, unlike a bare MinHashLSH
    query, whose band collisions include pairs well below it.
    """

    def __init__(self, params: MinHashParams = MinHashParams(), index_duplicates: bool = True) -> None:
        # index_duplicates=False: a doc verified as a duplicate of an earlier one is not indexed
        # itself (keep-first dedup); k copies of one text then cost k candidates, not k^2 / 2.
        self.params, self.index_duplicates = params, index_duplicates
        self.bands, self.rows = params.resolved()
        self.ids: list[Hashable] = []
        self._sigs: list[np.ndarray] = []  # one array per batch (kept to verify candidates)
        self._offsets: list[int] = []  # internal index of each batch's first doc
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (uint64 keys, int32 docs), (bands, m)
        self._parent: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[Hashable] | None, sigs: np.ndarray) -> list[tuple[Hashable, Hashable, float]]:
        """Index a batch; return its verified pairs (earlier id, new id, estimated Jaccard) against
        everything added before and within the batch. ids=None numbers docs 0, 1, ... in order."""
        base, k = len(self.ids), len(sigs)
        if k == 0:
            return []
        self.ids.extend(range(base, base + k) if ids is None else ids)
        self._parent.extend(range(base, base + k))
        self._sigs.append(np.array(sigs, np.uint32))
        self._offsets.append(base)
        keys = np.ascontiguousarray(band_hashes(sigs, self.bands, self.rows).T)
        new = np.arange(base, base + k, dtype=np.int64)
        pairs = np.unique(np.concatenate([c for band in range(self.bands) for c in self._candidates(band, keys[band], new)]))
        old, cur = pairs >> 32, pairs & 0xFFFFFFFF
        sims = np.concatenate([estimate_jaccard(self._gather(old[i:i + 65536]), self._gather(cur[i:i + 65536]))
                               for i in range(0, len(pairs), 65536)] or [np.empty(0)])
        ok = sims >= self.params.threshold
        old, cur, sims = old[ok], cur[ok], sims[ok]
        for a, b in zip(old.tolist(), cur.tolist()):
            self._union(a, b)
        keep = np.ones(k, bool)
        if not self.index_duplicates:
            keep[cur - base] = False
        self._push(keys[:, keep], np.tile(new[keep].astype(np.int32), (self.bands, 1)))
        return [(self.ids[a], self.ids[b], s) for a, b, s in zip(old.tolist(), cur.tolist(), sims.tolist())]

    def clusters(self) -> dict[Hashable, Hashable]:
        """Every doc's cluster, named by the id of its first-added member."""
        return {self.ids[i]: self.ids[self._find(i)] for i in range(len(self.ids))}

    def _candidates(self, band: int, keys: np.ndarray, new: np.ndarray) -> list[np.ndarray]:
        """Pairs sharing this band's hash, as int64 keys old << 32 | new (np.unique dedups them)."""
        order = np.argsort(keys, kind="stable")
        sk, sn, pos = keys[order], new[order], np.arange(len(keys))
        first = np.maximum.accumulate(np.where(np.r_[True, sk[1:] != sk[:-1]], pos, 0))
        before = pos - first  # equal keys earlier in sorted order: earlier docs (stable sort)
        out = [(sn[_ranges(first, before)] << 32) | np.repeat(sn, before)]
        for run_keys, run_docs in ((r[0][band], r[1][band]) for r in self._runs):
            # Sorted queries: numpy starts each binary search from the last one (~5x faster).
            lo = np.searchsorted(run_keys, sk)
            hit = np.flatnonzero(run_keys[np.minimum(lo, len(run_keys) - 1)] == sk)
            count = np.searchsorted(run_keys, sk[hit], "right") - lo[hit]
            out.append((run_docs[_ranges(lo[hit], count)].astype(np.int64) << 32) | np.repeat(sn[hit], count))
        return out

    def _push(self, keys: np.ndarray, docs: np.ndarray) -> None:
        if docs.shape[1]:
            self._runs.append(_sort_bands(keys, docs))
        while len(self._runs) > 1 and self._runs[-2][0].shape[1] <= 2 * self._runs[-1][0].shape[1]:
            (k2, d2), (k1, d1) = self._runs.pop(), self._runs.pop()
            self._runs.append(_sort_bands(np.concatenate([k1, k2], 1), np.concatenate([d1, d2], 1)))

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.params.num_perm), np.uint32)
        batch = np.searchsorted(self._offsets, idx, "right") - 1
        for c in np.unique(batch):
            m = batch == c
            out[m] = self._sigs[c][idx[m] - self._offsets[c]]
        return out

    def _find(self, x: int) -> int:
        parent = self._parent
        while parent[x] != x:
            parent[x] = x = parent[parent[x]]  # path halving
        return x

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:  # the smaller index (first added) stays the root: it names the cluster
            self._parent[max(ra, rb)] = min(ra, rb)
