"""Incremental exact + MinHash/LSH dedup of a pool's samples, with best-kept clusters.

Why not datasketch's `MinHashLSH` (what distilabel's `MinHashDedup` wraps): its index lives in
memory and is wiped every run, and its signatures are built one Python call per document. Here
signatures come from curation/minhash.py (vectorised) and both signatures and LSH band hashes
persist in the store, so a new batch is checked against everything already indexed and a re-run
on an unchanged store does nothing. Duplicates are judged within a scope (the prompt, for
traces: the same reasoning for two different questions is fine).

Within a cluster the kept member is the best one — verified first, then the higher judge
score, then the shorter text — not the first seen. Every dedup row records its parameters.
"""
from __future__ import annotations

from core.errors import DistillError

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from curation.minhash import MinHashParams, band_hashes, normalise, signatures
from store.store import Store
from curation.verify import VERIFIER

TEXT_KINDS = ("cot", "revision", "aggregate", "tool_trajectory", "tool_call", "critique")


@dataclass(frozen=True)
class DedupParams:
    minhash: MinHashParams = field(default_factory=lambda: MinHashParams(ngram=3, threshold=0.8))
    scope: str = "prompt"  # "prompt": duplicates share a prompt; "pool": anywhere in the pool
    kinds: tuple[str, ...] = TEXT_KINDS

    def __post_init__(self) -> None:
        if self.scope not in ("prompt", "pool"):
            raise DistillError(f"dedup scope {self.scope!r}: use 'prompt' (duplicates share a prompt) or 'pool'")

    def record(self) -> dict:
        return dict(self.minhash.as_record(), scope=self.scope, kinds=list(self.kinds))

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]


def sample_text(s: dict) -> str:
    """What dedup compares: the reasoning, and the final answer when there is one."""
    return s["reasoning"] or "" if s["answer"] is None else f"{s['reasoning'] or ''}\nAnswer: {s['answer']}"


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


def best_first(s: dict) -> tuple:
    """Sort key: verified, then higher judge score, then shorter text, then id (stable)."""
    return (not s.get("passed"), -(s.get("judge_score") or 0.0), len(sample_text(s)), s["id"])


def _cluster_rows(method: str, pairs: list[tuple[str, str]], existing: dict[str, str], info: dict[str, dict],
                  params: dict, run_id: str) -> list[dict]:
    params_json = json.dumps(params, sort_keys=True)  # once, not once per row
    """Rows for every cluster touched by `pairs` (new samples joined to old clusters)."""
    uf = _Clusters()
    for sid, cid in existing.items():  # old clusters stay as they were
        uf.union(sid, cid)
    for a, b in pairs:
        uf.union(a, b)
    touched = {uf.find(x) for pair in pairs for x in pair}
    touched |= {uf.find(x) for x in info if x not in existing}
    groups: dict[str, list[dict]] = {}
    for sid in info:
        root = uf.find(sid)
        if root in touched:
            groups.setdefault(root, []).append(info[sid])
    rows = []
    for members in groups.values():
        members.sort(key=best_first)
        cluster_id = "c" + min(m["id"] for m in members)[1:17]
        rows += [dict(sample_id=m["id"], method=method, cluster_id=cluster_id, keep=(i == 0), params=params_json,
                      run_id=run_id) for i, m in enumerate(members)]
    return rows


def sharded_signatures(texts: list[str], mp: MinHashParams, workers: int = 1, executor: str | None = None) -> np.ndarray:
    """MinHash signatures computed by `workers` shards in parallel (engine.executors: local processes or
    Ray). A document's signature depends only on its text, so the result is identical to one process."""
    if workers <= 1 and executor is None:
        return signatures(texts, mp)
    from engine.executors import map_tasks

    shards = max(1, workers)
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    parts = map_tasks(signatures, [(texts[a:b], mp) for a, b in zip(bounds[:-1], bounds[1:])], shards,
                      executor or "local")
    return np.concatenate(parts) if parts else signatures(texts, mp)


def dedup_samples(store: Store, pool: str, run_id: str, params: DedupParams = DedupParams(),
                  verifier: str = VERIFIER, workers: int = 1, executor: str | None = None) -> dict:
    """Index the pool's new samples, cluster them against everything indexed; returns counts.

    `workers` > 1 computes the signatures in parallel shards (`executor` "local" or "ray"); candidate
    pairs are then found globally from the band hashes in the store (a DuckDB self-join), clusters by
    union-find, so the result is the single-process one."""
    phash = params.hash()
    record = dict(params.record(), params_hash=phash)
    samples = store.dedup_samples_info(pool, list(params.kinds), verifier)
    info = {s["id"]: s for s in samples}
    indexed = store.dedup_indexed_ids(phash)
    new = [s for s in samples if s["id"] not in indexed]
    if not new:
        dropped = store.dedup_dropped(pool)
        return {"samples": len(samples), "new": 0, "exact_duplicates": dropped.get("exact", 0),
                "near_duplicates": dropped.get("minhash", 0)}
    mp = params.minhash
    bands, rows = mp.resolved()
    texts = [normalise(sample_text(s)) for s in new]
    sigs = sharded_signatures(texts, mp, workers, executor)
    bh = band_hashes(sigs, bands, rows)
    scope = [s["prompt_id"] if params.scope == "prompt" else pool for s in new]
    index_rows = [dict(sample_id=s["id"], params_hash=phash, scope=scope[i],
                       text_hash=hashlib.sha256(texts[i].encode()).hexdigest()[:32],
                       signature=sigs[i].tobytes(), run_id=run_id) for i, s in enumerate(new)]
    band_rows = {"params_hash": phash, "scope": np.repeat(scope, bands), "band": np.tile(np.arange(bands), len(new)),
                 "band_hash": bh.reshape(-1), "sample_id": np.repeat([s["id"] for s in new], bands)}
    with store.transaction():
        # Index and cluster rows land together: a kill -9 leaves neither, so a re-run redoes both.
        store.add_dedup_index(phash, record, index_rows, band_rows)
        exact_pairs = store.dedup_exact_pairs(phash, [s["id"] for s in new])
        candidates = store.dedup_band_pairs(phash, [s["id"] for s in new])
        near_pairs = _verified_pairs(store, phash, candidates, sigs.dtype, mp.threshold)
        for method, pairs in (("exact", exact_pairs), ("minhash", near_pairs + exact_pairs)):
            pairs = [(a, b) for a, b in pairs if a in info and b in info]
            existing = store.dedup_clusters(method, pool)
            store.upsert_dedup(_cluster_rows(method, pairs, existing, info, record, run_id))
    dropped = store.dedup_dropped(pool)
    return {"samples": len(samples), "new": len(new), "exact_duplicates": dropped.get("exact", 0),
            "near_duplicates": dropped.get("minhash", 0)}


def _verified_pairs(store: Store, phash: str, candidates: list[tuple[str, str]], dtype: np.dtype,
                    threshold: float) -> list[tuple[str, str]]:
    """Candidates sharing a band whose estimated Jaccard reaches the threshold (drops LSH false positives)."""
    if not candidates:
        return []
    ids = sorted({x for pair in candidates for x in pair})
    sig = {k: np.frombuffer(v, dtype=dtype) for k, v in store.dedup_signatures(phash, ids).items()}
    return [(a, b) for a, b in candidates if float(np.mean(sig[a] == sig[b])) >= threshold]


def embedding_dedup(store: Store, pool: str, run_id: str, threshold: float = 0.95, scope: str = "prompt",
                    verifier: str = VERIFIER, kinds: tuple[str, ...] = TEXT_KINDS) -> dict:
    """Optional semantic dedup (method "embedding"): MiniLM cosine >= threshold within a scope.

    Incremental like the MinHash pass: only samples without an "embedding" row are new, and only
    pairs touching a new sample are formed (embeddings come from the on-disk cache after the first run).
    """
    from curation.embed import embed_texts, embedding_duplicates

    samples = store.dedup_samples_info(pool, list(kinds), verifier)
    info = {s["id"]: s for s in samples}
    existing = store.dedup_clusters("embedding", pool)
    new = {s["id"] for s in samples if s["id"] not in existing}
    if not new:
        return {"samples": len(samples), "new": 0, "near_duplicates": store.dedup_dropped(pool).get("embedding", 0)}
    groups: dict[str, list[dict]] = {}
    for s in samples:
        groups.setdefault(s["prompt_id"] if scope == "prompt" else pool, []).append(s)
    pairs = []
    for members in groups.values():
        if not new.intersection(m["id"] for m in members):
            continue
        vectors = embed_texts([sample_text(m) for m in members])
        pairs += [(a, b) for a, b, _ in embedding_duplicates([m["id"] for m in members], vectors, threshold)
                  if a in new or b in new]
    record = {"model": "all-minilm-l6-v2", "threshold": threshold, "scope": scope, "kinds": list(kinds)}
    with store.transaction():
        store.upsert_dedup(_cluster_rows("embedding", pairs, existing, info, record, run_id))
    return {"samples": len(samples), "new": len(new), "near_duplicates": store.dedup_dropped(pool).get("embedding", 0)}
