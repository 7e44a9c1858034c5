"""Scale-out: the same synthesis job and the same dedup job with 1 worker and with 2, on a local Ray cluster.

Synthesis: 5,000 train prompts x 2 samples = 10,000 requests, `synth.cot.generate_traces` with an API
teacher `api:openai/echo` whose run options carry `workers` and `executor` (so `engine.sharded.run_sharded`
runs it: one shard store per worker, then the coordinator ingests every shard into the main store).
The server is `distill serve --model echo --latency L` in a child process, fresh for every run. Each
worker count gets a fresh Ray cluster with num_cpus = workers (`ray.shutdown()` in between), started
and its worker processes warmed (engine modules imported) before the clock starts; the cluster start
is reported apart. Three sharded runs:
  1 worker,  max_concurrency C   (the baseline)
  2 workers, max_concurrency C   (the product's default: the budget is split, C/2 per shard)
  2 workers, max_concurrency 2C  (each shard gets C, what one worker had)
and, for reference, the same job with no sharding at all (`run_api_requests` in this process).
Scaling efficiency = throughput at N / (N x throughput at 1 worker). The coordinator's ingest
(`engine.sharded.ingest`, one call per shard) and the workers' phase are timed by wrapping those
product functions; store bytes per request row come from the file sizes.

Dedup, two measurements on synthetic ~60-word documents (Zipf-like words, one in 20 a near copy):
  signatures  `curation.dedup.sharded_signatures` (MinHash over Ray tasks) on --docs (200,000) texts
  full dedup  `curation.dedup.dedup_samples` on a store of --dedup-store-docs (200,000) samples (signatures
              sharded, then the index insert and the band-pair self-join in DuckDB, which stay in
              the coordinator), a fresh copy of the same store for each worker count

run:
  .venv/bin/python bench/scale_out.py            # 10,000 requests, 200,000 docs (~8 min on 2 cores)
  .venv/bin/python bench/scale_out.py --quick    # 1,000 requests, 20,000 docs, a 4,000-sample store
  options: --requests N  --docs N  --dedup-store-docs N  --latency 0.05  --concurrency 16
           --executor ray|local  --no-reference
The table goes to stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import engine.sharded as sharded  # noqa: E402
import curation.dedup as dedup  # noqa: E402
from clients.teachers import get_teacher  # noqa: E402
from curation.dedup import DedupParams, dedup_samples, sharded_signatures  # noqa: E402
from prompts.rows import PromptRow, split_for, stable_id  # noqa: E402
from store.store import Store  # noqa: E402
from synth.cot import CotParams, generate_traces  # noqa: E402
from synth_throughput import Server  # noqa: E402  (the echo server in its own process)

POOL = "bench"
PARAMS = CotParams(num_samples=2, max_new_tokens=16, num_examples=0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the server --------------------------------------------------------------------------------

# ---- Ray ---------------------------------------------------------------------------------------

def _warm() -> int:
    """Run in each Ray worker before the clock: the imports a shard needs, so both runs start warm."""
    import clients.api  # noqa: F401
    import curation.minhash  # noqa: F401
    import engine.api_engine  # noqa: F401
    import engine.sharded  # noqa: F401
    time.sleep(0.5)  # hold the slot, so each of `workers` tasks lands in its own process
    return os.getpid()


def fresh_cluster(workers: int, executor: str) -> float:
    """A local Ray cluster with `workers` CPU slots (the product's `ray_module`), its workers warmed;
    returns the seconds that took. Nothing for the local executor (it spawns per shard)."""
    if executor != "ray":
        return 0.0
    import ray

    from engine.executors import ray_module

    ray.shutdown()
    began = time.perf_counter()
    ray_module(workers)
    task = ray.remote(num_cpus=1)(_warm)
    pids = ray.get([task.remote() for _ in range(workers)])
    assert len(set(pids)) == workers, pids
    assert ray.cluster_resources().get("CPU") == workers, ray.cluster_resources()
    return time.perf_counter() - began


# ---- timing wrappers around product functions --------------------------------------------------

class Timings:
    """Wraps engine.sharded's run_sharded, executor and ingest (the module globals run_sharded calls)."""

    def __init__(self) -> None:
        self.ingests: list[dict] = []
        self.workers_s = 0.0
        self.sharded_s = 0.0
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, make: Callable[[Callable], Callable]) -> None:
        self._saved[name] = getattr(sharded, name)
        setattr(sharded, name, make(self._saved[name]))

    def __enter__(self) -> "Timings":
        def ingest(original):
            def timed(store, shard_store, units, run_id, postprocess):
                size = file_bytes(shard_store)
                began = time.perf_counter()
                n = original(store, shard_store, units, run_id, postprocess)
                self.ingests.append(dict(rows=n, seconds=time.perf_counter() - began, shard_bytes=size))
                return n
            return timed

        def phase(attr):
            def make(original):
                def timed(*args, **kwargs):
                    began = time.perf_counter()
                    try:
                        return original(*args, **kwargs)
                    finally:
                        setattr(self, attr, getattr(self, attr) + time.perf_counter() - began)
                return timed
            return make

        self._wrap("ingest", ingest)
        self._wrap("_run_ray", phase("workers_s"))
        self._wrap("_run_local", phase("workers_s"))
        self._wrap("run_sharded", phase("sharded_s"))  # engine.engine imports it at call time
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(sharded, name, original)


def file_bytes(path: Path) -> int:
    wal = Path(f"{path}.wal")
    return (path.stat().st_size if path.exists() else 0) + (wal.stat().st_size if wal.exists() else 0)


# ---- synthesis -----------------------------------------------------------------------------------

def train_prompts(n: int) -> list[PromptRow]:
    """n distinct train-split prompts (no rationale, so no few-shot exemplars are picked)."""
    rows, i = [], 0
    while len(rows) < n:
        text = f"Question {i}: is {i} an even number? Think it through before answering."
        rid = stable_id("bench", text)
        if split_for(rid) == "train":
            rows.append(PromptRow(id=rid, source="file", task="yesno", input=text, gold="Yes" if i % 2 == 0 else "No",
                                  split="train", choices=["Yes", "No"]))
        i += 1
    return rows


def synth_run(tmp: Path, name: str, rows: list[PromptRow], latency: float, concurrency: int,
              workers: int | None, executor: str) -> dict:
    """One synthesis job on a fresh store and a fresh server; `workers` None runs it unsharded."""
    path = tmp / f"synth-{name}.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, POOL)
    prompts_bytes = file_bytes(path)
    cluster_s = fresh_cluster(workers, executor) if workers else 0.0
    shard_opts = dict(workers=workers, executor=executor) if workers else {}
    with Server(latency) as server, Store(path) as store, Timings() as timings:
        teacher = get_teacher("api:openai/echo", api_base=server.url, api_key="sk-local",
                              max_concurrency=concurrency, **shard_opts)
        began = time.perf_counter()
        out = generate_traces(store, teacher, POOL, PARAMS, run_id=name)
        seconds = time.perf_counter() - began
        done = store.count("requests", "status = 'done'")
        samples = store.count("samples")
    store_bytes = file_bytes(path)
    assert done == out["requests"] == len(rows) * PARAMS.num_samples, (done, out)
    ingested = sum(i["rows"] for i in timings.ingests)
    ingest_s = sum(i["seconds"] for i in timings.ingests)
    return dict(name=name, workers=workers, concurrency=concurrency, seconds=seconds, requests=done, samples=samples,
                cluster_s=cluster_s, workers_s=timings.workers_s, sharded_s=timings.sharded_s, ingests=timings.ingests,
                ingest_s=ingest_s, ingest_rate=ingested / ingest_s if ingest_s else None,
                bytes_per_row=(store_bytes - prompts_bytes) / done, store_bytes=store_bytes,
                shard_bytes_per_row=(sum(i["shard_bytes"] for i in timings.ingests) / ingested) if ingested else None)


# ---- dedup ---------------------------------------------------------------------------------------

def corpus(n: int, seed: int = 0, words: int = 60, vocab: int = 5_000) -> list[str]:
    """n ~60-word docs, words drawn Zipf-like; every 20th doc a near copy of the one before it."""
    rng = np.random.default_rng(seed)
    names = np.array([f"w{i}" for i in range(vocab)])
    p = 1.0 / np.arange(1, vocab + 1)
    idx = rng.choice(vocab, size=(n, words), p=p / p.sum())
    for i in range(19, n, 20):  # a near duplicate: three words changed
        idx[i] = idx[i - 1]
        idx[i, rng.choice(words, 3, replace=False)] = rng.choice(vocab, 3)
    return [" ".join(row) for row in names[idx]]


def signature_runs(texts: list[str], executor: str) -> list[dict]:
    mp = DedupParams().minhash  # what dedup_samples uses by default
    out, first = [], None
    for workers in (1, 2):
        cluster_s = fresh_cluster(workers, executor)
        began = time.perf_counter()
        sigs = sharded_signatures(texts, mp, workers, executor)
        seconds = time.perf_counter() - began
        if first is None:
            first = sigs
        assert np.array_equal(sigs, first), "sharded signatures differ between worker counts"
        out.append(dict(workers=workers, seconds=seconds, docs=len(texts), cluster_s=cluster_s))
        log(f"[scale-out] signatures, {workers} worker(s): {seconds:.2f} s")
    return out


def dedup_store(tmp: Path, n_docs: int) -> Path:
    """A store whose pool holds n_docs cot samples with the corpus' texts (test double teacher, local path)."""
    from tests.doubles import ScriptedTeacher

    per_prompt = 4
    rows = train_prompts(max(1, n_docs // per_prompt))
    texts = [f"{t}\nAnswer: Yes" for t in corpus(len(rows) * per_prompt, seed=1)]
    path = tmp / "dedup-base.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, POOL)
        generate_traces(store, ScriptedTeacher("corpus", texts), POOL,
                        CotParams(num_samples=per_prompt, max_new_tokens=200, num_examples=0), run_id="corpus")
    return path


STORE_PARTS = ("dedup_samples_info", "add_dedup_index", "dedup_exact_pairs", "dedup_band_pairs",
               "dedup_signatures", "upsert_dedup")


def time_methods(store: Store, names: tuple[str, ...]) -> dict[str, float]:
    """Seconds spent in each named Store method of this instance (wrapped on the instance only)."""
    spent = dict.fromkeys(names, 0.0)
    for name in names:
        def timed(*args, _name=name, _original=getattr(store, name), **kwargs):
            began = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - began
        setattr(store, name, timed)
    return spent


def dedup_runs(tmp: Path, base: Path, executor: str) -> list[dict]:
    out, first = [], None
    for workers in (1, 2):
        path = tmp / f"dedup-{workers}.duckdb"
        shutil.copyfile(base, path)
        cluster_s = fresh_cluster(workers, executor)
        sig_s = [0.0]
        original = dedup.sharded_signatures

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sig_s[0] += time.perf_counter() - began
        dedup.sharded_signatures = timed  # dedup_samples calls the module global
        try:
            with Store(path) as store:
                parts = time_methods(store, STORE_PARTS)
                began = time.perf_counter()
                counts = dedup_samples(store, POOL, "d", DedupParams(), workers=workers, executor=executor)
                seconds = time.perf_counter() - began
        finally:
            dedup.sharded_signatures = original
        if first is None:
            first = counts
        assert counts == first, (counts, first)
        out.append(dict(workers=workers, seconds=seconds, docs=counts["new"], signatures_s=sig_s[0],
                        cluster_s=cluster_s, counts=counts, parts=parts))
        log(f"[scale-out] full dedup, {workers} worker(s): {seconds:.2f} s ({counts})")
    return out


# ---- report --------------------------------------------------------------------------------------

def versions() -> str:
    from importlib.metadata import version
    libs = ", ".join(f"{p} {version(p)}" for p in ("ray", "duckdb", "aiohttp", "numpy"))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load}; {libs}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="synthesis requests (prompts x 2 samples)")
    parser.add_argument("--docs", type=int, default=200_000, help="documents for the signature job")
    parser.add_argument("--dedup-store-docs", type=int, default=200_000, help="samples in the full-dedup store")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server holds each request")
    parser.add_argument("--concurrency", type=int, default=16, help="the job's max_concurrency C")
    parser.add_argument("--executor", choices=("ray", "local"), default="ray")
    parser.add_argument("--quick", action="store_true", help="1,000 requests, 20,000 docs, 4,000 store docs")
    parser.add_argument("--no-reference", action="store_true", help="skip the unsharded synthesis run")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.docs, args.dedup_store_docs = 1_000, 20_000, 4_000
    c, lat, ex = args.concurrency, args.latency, args.executor
    rows = train_prompts(args.requests // PARAMS.num_samples)
    log(f"[scale-out] {versions()}")

    synth: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp_name:
            tmp = Path(tmp_name)
            plan = [("1w", 1, c), ("2w-split", 2, c), ("2w-unsplit", 2, 2 * c)]
            if not args.no_reference:
                plan.insert(0, ("unsharded", None, c))
            for name, workers, conc in plan:
                log(f"[scale-out] synthesis {name}: {len(rows) * PARAMS.num_samples} requests, C = {conc}")
                synth[name] = synth_run(tmp, name, rows, lat, conc, workers, ex)
                log(f"[scale-out]   {synth[name]['seconds']:.2f} s")
            texts = corpus(args.docs)
            sigs = signature_runs(texts, ex)
            del texts
            base = dedup_store(tmp, args.dedup_store_docs)
            full = dedup_runs(tmp, base, ex)
    finally:
        if ex == "ray":
            import ray
            ray.shutdown()

    print(f"\n{versions()}\n")
    print(f"Synthesis: {args.requests} requests ({len(rows)} prompts x {PARAMS.num_samples}), echo server "
          f"L = {lat} s in its own process, executor {ex}. Efficiency = throughput / (workers x throughput of "
          f"the 1-worker run). Ceiling = (concurrency in flight) / L.\n")
    print("| job | workers | budget (per shard) | ceiling req/s | seconds | throughput | scaling efficiency "
          "| workers phase s | coordinator ingest s | coordinator other s | cluster start s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    one = synth["1w"]["requests"] / synth["1w"]["seconds"]
    for name, r in synth.items():
        thr = r["requests"] / r["seconds"]
        shards = r["workers"] or 1
        per_shard = -(-r["concurrency"] // shards)
        eff = f"{thr / (shards * one):.2f}" if r["workers"] else "(reference)"
        budget = f"C={r['concurrency']} ({per_shard})"
        phases = (f"{r['workers_s']:.2f} | {r['ingest_s']:.2f} | {r['seconds'] - r['workers_s'] - r['ingest_s']:.2f} "
                  f"| {r['cluster_s']:.1f}") if r["workers"] else "- | - | - | -"
        print(f"| synthesis {name} | {r['workers'] or '1 (in-process)'} | {budget} | {per_shard * shards / lat:.0f} "
              f"| {r['seconds']:.2f} | {thr:.1f} req/s | {eff} | {phases} |")
    for label, runs in (("signatures (sharded_signatures)", sigs), ("full dedup_samples", full)):
        base_thr = runs[0]["docs"] / runs[0]["seconds"]
        for r in runs:
            thr = r["docs"] / r["seconds"]
            extra = f"; signatures {r['signatures_s']:.2f} s" if "signatures_s" in r else ""
            print(f"| {label}, {r['docs']} docs | {r['workers']} | - | - | {r['seconds']:.2f}{extra} | "
                  f"{thr:.0f} docs/s | {thr / (r['workers'] * base_thr):.2f} | - | - | - | {r['cluster_s']:.1f} |")

    print("\nCoordinator other = prompt building in generate_traces (before run_sharded) + run_sharded's own "
          "work outside the workers and the ingest (request keys, cache lookup, seeding, spec files, final read):\n")
    for name, r in synth.items():
        if r["workers"]:
            print(f"- {name}: prompts {r['seconds'] - r['sharded_s']:.2f} s + run_sharded "
                  f"{r['sharded_s'] - r['workers_s'] - r['ingest_s']:.2f} s")
    print("\nPer-shard coordinator ingest (engine.sharded.ingest: read the shard store, postprocess, one "
          "transaction into the main store):\n")
    print("| run | shard | rows | seconds | rows/s | shard store bytes/row |")
    print("|---|---|---|---|---|---|")
    for name, r in synth.items():
        for i, ing in enumerate(r["ingests"]):
            print(f"| {name} | {i} | {ing['rows']} | {ing['seconds']:.3f} | {ing['rows'] / ing['seconds']:.0f} "
                  f"| {ing['shard_bytes'] / max(1, ing['rows']):.0f} |")
    print("\nStore size (main store after the job, minus the store with only the prompts, per request row; "
          "each request row comes with one sample row):\n")
    for name, r in synth.items():
        print(f"- {name}: {r['bytes_per_row']:.0f} B/request row (store {r['store_bytes'] / 1e6:.1f} MB)")
    if full:
        r = full[0]
        rest = r["seconds"] - r["signatures_s"]
        print(f"\nFull dedup, 1 worker: {r['seconds']:.2f} s, of which signatures (sharded) {r['signatures_s']:.2f} s; "
              f"the rest runs in the coordinator, not sharded: {rest:.2f} s = {r['docs'] / rest:.0f} docs/s. "
              f"Store calls in it: " + ", ".join(f"{k} {v:.2f} s" for k, v in r["parts"].items())
              + f"; Python (normalise, hashes, index rows, union-find) {rest - sum(r['parts'].values()):.2f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
