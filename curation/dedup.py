"""Exact and MinHash near-duplicate detection over traces (datasketch), with clusters.

Within a cluster the kept member is the best one (verified first, then shortest), not the
first seen. Parameters are recorded with every row so a dedup run can be reproduced.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

import datasketch
from datasketch import MinHash, MinHashLSH

from curation.store import Store
from curation.verify import VERIFIER


@dataclass(frozen=True)
class DedupParams:
    shingle_words: int = 3
    num_perm: int = 128
    threshold: float = 0.8
    seed: int = 1


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", text.lower())).strip()


def shingles(text: str, n: int) -> set[bytes]:
    words = normalise(text).split()
    if len(words) < n:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class _Clusters:
    """Union-find over sample ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _text(s: dict) -> str:
    # Duplicates are judged per prompt: the same reasoning for two different questions is fine.
    return f"{s['reasoning'] or ''}\nAnswer: {s['answer'] or ''}"


def _best_first(s: dict) -> tuple:
    return (not s["passed"], s["completion_tokens"] or 0, s["id"])


def _write(store: Store, method: str, samples: list[dict], clusters: _Clusters, params: dict,
           run_id: str) -> int:
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(clusters.find(s["id"]), []).append(s)
    rows = []
    for members in groups.values():
        members.sort(key=_best_first)
        cluster_id = "c" + members[0]["id"][1:17]
        rows += [dict(sample_id=m["id"], method=method, cluster_id=cluster_id, keep=(i == 0),
                      params=params, run_id=run_id) for i, m in enumerate(members)]
    store.replace_dedup(method, rows)
    return sum(1 for r in rows if not r["keep"])


def dedup_samples(store: Store, pool: str, run_id: str, params: DedupParams = DedupParams()) -> dict:
    """Exact then MinHash dedup of a pool's traces; returns how many each method dropped."""
    samples = [s for s in store.curated_samples(pool, VERIFIER)]
    exact = _Clusters()
    first_by_hash: dict[tuple, str] = {}
    for s in samples:
        h = (s["prompt_id"], hashlib.sha256(normalise(_text(s)).encode()).hexdigest())
        exact.union(s["id"], first_by_hash.setdefault(h, s["id"]))
    dropped_exact = _write(store, "exact", samples, exact, {"normaliser": "lower-nopunct-ws"}, run_id)

    near = _Clusters()
    lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
    for s in samples:
        m = MinHash(num_perm=params.num_perm, seed=params.seed)
        m.update_batch(list(shingles(_text(s), params.shingle_words)))
        key = f"{s['prompt_id']}|{s['id']}"
        for other in lsh.query(m):
            if other.split("|")[0] == s["prompt_id"]:
                near.union(s["id"], other.split("|")[1])
        lsh.insert(key, m)
        near.find(s["id"])
    meta = dict(asdict(params), datasketch=datasketch.__version__, scheme="word-shingles+MinHashLSH")
    dropped_near = _write(store, "minhash", samples, near, meta, run_id)
    return {"samples": len(samples), "exact_duplicates": dropped_exact, "near_duplicates": dropped_near}
