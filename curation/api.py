"""The curation stages as one object a notebook can drive.

    from curation import Curation
    c = Curation("runs/demo/store.duckdb", pool="arc_easy")
    c.verify("answer_match", "format")
    c.dedup(threshold=0.8)
    c.clusters()                       # DataFrame: one row per sample in a duplicate cluster
    c.purify("majority"); c.purify("classifier_router", splits=("train", "test"))
    c.verdicts("answer_match")         # DataFrame
    c.export("sft", "runs/sft.parquet", method="majority")
    ds = c.dataset("dpo")              # datasets.Dataset with lineage columns

Every call records a run in the store and is incremental: repeating it does no work twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from store.store import Store


class Curation:
    def __init__(self, store: str | Path | Store, pool: str):
        self.store = store if isinstance(store, Store) else Store(store)
        self.pool = pool
        if not self.store.count("prompts", "pool = ?", [pool]):
            from core.errors import DistillError
            raise DistillError(f"pool '{pool}' is empty in {self.store.path}: load it with `distill data load`")

    def _run(self, stage: str, config: dict, fn: Any) -> dict:
        from store.runs import recorded_run

        with recorded_run(self.store, stage, dict(config, pool=self.pool)) as run:
            out = fn(run.run_id)
            self.store.check_requests_done(run.run_id)  # failed teacher requests: the run fails, exit 3
            return out

    # -- stages ---------------------------------------------------------------------------
    def verify(self, *verifiers: str) -> dict:
        from curation.verify import VERIFIER, verify
        names = list(verifiers) or [VERIFIER]
        return self._run("verify", {"verifiers": names}, lambda r: verify(self.store, self.pool, r, names))

    def dedup(self, threshold: float = 0.8, ngram: int = 3, num_perm: int = 128, shingle: str = "word",
              scope: str = "prompt", workers: int = 1, executor: str | None = None) -> dict:
        """MinHash dedup; `workers` > 1 computes signatures in parallel shards (`executor` local or ray)."""
        from curation.dedup import DedupParams, dedup_samples
        from curation.minhash import MinHashParams
        from engine.executors import check_executor
        check_executor(executor or "local", workers)
        params = DedupParams(MinHashParams(shingle=shingle, ngram=ngram, num_perm=num_perm, threshold=threshold), scope)
        return self._run("dedup", params.record(), lambda r: dedup_samples(self.store, self.pool, r, params,
                                                                           workers=workers, executor=executor))

    def embedding_dedup(self, threshold: float = 0.95, scope: str = "prompt") -> dict:
        """Optional semantic dedup with the offline MiniLM model (method "embedding")."""
        from curation.dedup import embedding_dedup
        return self._run("dedup", {"method": "embedding", "threshold": threshold, "scope": scope},
                         lambda r: embedding_dedup(self.store, self.pool, r, threshold, scope))

    def decontaminate(self, n: int = 13) -> dict:
        from curation.decontam import decontaminate
        return self._run("decontam", {"n": n}, lambda r: decontaminate(self.store, self.pool, r, n))

    def purify(self, method: str = "verified_first", **options: Any) -> dict:
        from curation.purify import purify
        return self._run("purify", dict(options, method=method),
                         lambda r: purify(self.store, self.pool, r, method, **options))

    def export(self, kind: str, path: str | Path, **options: Any) -> dict:
        from curation.export import export
        return self._run("export", dict(options, kind=kind, path=str(path)),
                         lambda r: export(self.store, self.pool, kind, path, run_id=r, **options))

    def dataset(self, kind: str = "sft", **options: Any):
        """The export rows as a `datasets.Dataset` (nothing written to disk)."""
        import datasets

        from curation.export import records
        return datasets.Dataset.from_list(records(self.store, self.pool, kind, **options))

    # -- views ----------------------------------------------------------------------------
    def samples(self):
        return self.store.frame_samples(self.pool)

    def clusters(self, method: str = "minhash", duplicates_only: bool = True):
        return self.store.frame_clusters(self.pool, method, duplicates_only)

    def verdicts(self, verifier: str | None = None):
        return self.store.frame_verdicts(self.pool, verifier)

    def purified(self, method: str = "verified_first"):
        return self.store.frame_purified(self.pool, method)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Curation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
