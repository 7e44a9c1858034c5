"""Sharded synthesis: the API request engine run by N workers, each on its own DuckDB shard file.

DuckDB has one writer per file, so a job that outgrows one process splits by a stable hash of
the prompt id into N shards. Each shard is a spec file (JSON: the teacher's settings without its
key, the jobs, the generation params, its share of the rate budget) and a shard store next to
the main one; a worker runs `run_api_requests` (limits, retries, cache, cost) against that shard
store. The coordinator (the `distill synth` process) then ingests every shard's rows into the
main store by request key and runs the stage's postprocess there (samples, parsed answers), so
ingesting twice adds nothing and workers never need the stage's code.

Executors, one switch (datatrove-style): "local" (a process pool on this machine), "ray" (Ray
tasks on the cluster at RAY_ADDRESS, or a local one) and "slurm" (an sbatch array script over the
same spec files; re-run the command to ingest). Faults: a worker killed mid-shard leaves its
finished rows in its shard store; the retry (Ray's task retry, a fresh local pool, a re-run)
resumes from them and repeats no finished teacher call. Keys are read from the environment
in each worker (`api_key_env`), never written into a spec; a key passed as a value (Python API)
reaches local workers through their environment only, and Ray or Slurm workers not at all (refused).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from clients.types import Generation
from core.errors import DistillError, RequestsIncomplete
from engine.executors import ray_module
from engine.jobs import GenParams, Job, model_key, Postprocess, request_key
from store.store import Store

EXECUTORS = ("local", "ray", "slurm")
WORKER_TRIES = 3  # a shard whose worker dies is started again this many times in all
SHARD_KEY_ENV = "DISTILL_SHARD_API_KEY"  # how local workers receive a key that was passed as a value


def shard_index(prompt_id: str, shards: int) -> int:
    """Stable across runs and machines (not Python's salted hash): a re-run finds the same shard."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:15], 16) % shards


def shard_root(store_path: str | Path, teacher: Any, params: GenParams, purpose: str, shards: int) -> Path:
    """Where a job's shard files live: next to the store, named by what decides the request keys."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", teacher.name)[:60]
    return Path(f"{store_path}.shards") / f"{purpose}-{safe}-{params.hash()}-of-{shards}"


def _passed_key(teacher: Any, executor: str) -> str | None:
    """A key the teacher got as a value (no environment variable names it): only local workers can
    receive it (through their environment); Ray and Slurm workers run elsewhere and are refused."""
    key = teacher.key_given_as_value()
    if key and executor != "local":
        raise DistillError(f"teacher {teacher.name}: --executor {executor} workers read the API key from an "
                           "environment variable on their own machine, and this key was passed as a value: pass "
                           "api_key_env=<VAR> (--api-key-env) and export it on every node, or use --executor local")
    return key


def _teacher_settings(teacher: Any, key_env: str | None, shards: int) -> dict:
    """The worker's ApiTeacher arguments (no key); the per-replica cap is split like the concurrency."""
    cap = teacher.max_per_replica
    return dict(name=teacher.name, model=teacher.model, api_base=teacher.api_base, api_key_env=key_env,
                price_per_mtok=teacher.price_per_mtok, timeout_s=teacher.timeout_s,
                max_per_replica=max(1, math.ceil(cap / shards)) if cap else 0,
                extra_params=teacher.extra_params)


def _shard_options(options: dict, shards: int, spent: float) -> dict:
    """Each shard's share of the job's rate budget, so N shards together respect it."""
    share = dict(options)
    for name in ("rpm", "tpm"):
        if share.get(name):
            share[name] = share[name] / shards
    if share.get("max_concurrency"):
        share["max_concurrency"] = max(1, math.ceil(share["max_concurrency"] / shards))
    if share.get("max_budget_usd") is not None:
        share["max_budget_usd"] = max(0.0, share["max_budget_usd"] - spent) / shards
    return share


# ---- the worker side ------------------------------------------------------------------------

def run_shard(spec_path: str | Path) -> dict:
    """Run one shard from its spec file (the Ray task, the pool worker and the Slurm array task)."""
    from clients.api import ApiTeacher
    from engine.api_engine import RunStats, run_api_requests

    spec = json.loads(Path(spec_path).read_text())
    settings = spec["teacher"]
    if settings.get("price_per_mtok"):
        settings["price_per_mtok"] = tuple(settings["price_per_mtok"])
    teacher = ApiTeacher(**settings)
    jobs = [Job(**j) for j in spec["jobs"]]
    params = GenParams(**dict(spec["params"], stop=tuple(spec["params"]["stop"])))
    stats, error = RunStats(), None
    with Store(spec["store"]) as store:
        try:
            run_api_requests(store, teacher, jobs, params, purpose=spec["purpose"], run_id=spec["run_id"],
                             label=f"shard {spec['index']}", stats=stats, **spec["options"])
        except DistillError as err:  # breaker or budget: what finished is stored; the coordinator says so
            error = str(err)
    summary = dict(index=spec["index"], done=stats.done, failed=stats.failed, cached=stats.cached,
                   calls=stats.calls, pid=os.getpid(), error=error)
    if error is None:  # the completion marker: this shard's jobs are all answered or stored with errors
        Path(f"{spec['store']}.done").write_text(json.dumps(summary))
    return summary


# ---- executors ------------------------------------------------------------------------------

def _shard_process(spec_path: str) -> None:
    """A local worker: run the shard and leave its summary next to the spec for the coordinator."""
    summary = run_shard(spec_path)
    Path(spec_path).with_suffix(".result.json").write_text(json.dumps(summary))


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    """`name=value` in this process's environment for the block (nothing when value is None)."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run_local(specs: list[Path], workers: int) -> dict[int, dict]:
    """One spawned process per shard, at most `workers` at a time. A process per shard rather than a
    pool: a killed worker breaks a whole ProcessPoolExecutor, which would stop the other shards too."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("spawn")
    results: dict[int, dict] = {}
    queue = [(i, path, 1) for i, path in enumerate(specs)]
    running: dict[int, tuple[Any, Path, int]] = {}
    while queue or running:
        while queue and len(running) < workers:
            i, path, attempt = queue.pop(0)
            path.with_suffix(".result.json").unlink(missing_ok=True)
            process = ctx.Process(target=_shard_process, args=(str(path),), name=f"distill-shard-{i}")
            process.start()
            running[i] = (process, path, attempt)
        time.sleep(0.05)
        for i, (process, path, attempt) in list(running.items()):
            if process.is_alive():
                continue
            process.join()
            del running[i]
            result = path.with_suffix(".result.json")
            if result.exists():
                results[i] = json.loads(result.read_text())
            elif attempt < WORKER_TRIES:  # killed (exit code {process.exitcode}): resume from its shard store
                print(f"[sharded] shard {i}'s worker died (exit {process.exitcode}); starting it again",
                      file=sys.stderr, flush=True)
                queue.append((i, path, attempt + 1))
            else:
                results[i] = {"index": i, "error": f"its worker died {WORKER_TRIES} times"}
    return results


def _run_ray(specs: list[Path], workers: int) -> dict[int, dict]:
    """Ray tasks, one per shard; Ray starts a task again when its worker process dies."""
    ray = ray_module(workers)
    task = ray.remote(num_cpus=1, max_retries=WORKER_TRIES - 1, retry_exceptions=False)(run_shard)
    refs = [task.remote(str(path)) for path in specs]
    results: dict[int, dict] = {}
    for i, ref in enumerate(refs):
        try:
            results[i] = ray.get(ref)
        except ray.exceptions.RayError as err:
            results[i] = {"index": i, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    return results


def write_sbatch(root: Path, specs: list[Path]) -> Path:
    """An sbatch array script running one shard per array task (`sbatch` it, then re-run to ingest)."""
    script = root / "synth.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --job-name=distill-{root.name[:40]}\n"
        f"#SBATCH --array=0-{len(specs) - 1}\n"
        "#SBATCH --cpus-per-task=2\n"
        f"#SBATCH --output={root}/slurm-%A_%a.log\n"
        "# The API key is read from the environment variable the teacher names (export it before sbatch).\n"
        f"exec {sys.executable} -m engine.sharded {root}/shard-$SLURM_ARRAY_TASK_ID.json\n")
    return script


# ---- the coordinator ------------------------------------------------------------------------

def ingest(store: Store, shard_store: Path, units: dict[str, tuple[Job, int]], run_id: str,
           postprocess: Postprocess | None) -> int:
    """Copy a shard's rows for `units` into the main store (by request key: twice adds nothing), with
    the stage's postprocess run on each answer as the single-process engine runs it."""
    if not shard_store.exists():
        return 0
    with Store(shard_store, read_only=True) as shard:
        rows = shard.request_rows(list(units))
    samples = []
    for row in rows:
        row["extra"] = json.loads(row["extra"]) if isinstance(row["extra"], str) else (row["extra"] or {})
        row["run_id"] = run_id
        if row["status"] == "done" and postprocess:
            gen = Generation(text=row["response"] or "", prompt_tokens=row["prompt_tokens"] or 0,
                             completion_tokens=row["completion_tokens"] or 0,
                             finish_reason=row["finish_reason"] or "length", reasoning=row["extra"].get("reasoning"),
                             cost_usd=row["cost_usd"] or 0.0)
            job, index = units[row["key"]]
            extra, sample_rows = postprocess(job, index, gen, row["key"])
            row["extra"] = {**row["extra"], **extra}
            samples += [dict(s, run_id=run_id) for s in sample_rows]
    store.add_requests_and_samples(rows, samples)  # one transaction: a kill leaves all of it or none
    return len(rows)


def run_sharded(store: Store, teacher: Any, jobs: list[Job], params: GenParams, *, purpose: str, run_id: str,
                postprocess: Postprocess | None = None, workers: int = 2, executor: str = "local",
                label: str = "", **options: Any) -> dict[str, dict]:
    """`run_api_requests` over `workers` shards; returns every job's done request rows by key."""
    if executor not in EXECUTORS:
        raise DistillError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise DistillError(f"--workers {workers}: use 1 or more")
    passed_key = _passed_key(teacher, executor)  # before anything is written
    key_env = SHARD_KEY_ENV if passed_key else teacher.api_key_env
    units = {request_key(model_key(teacher), j.rendered, params, i): (j, i) for j in jobs
             for i in range(params.num_samples)}
    cached = store.finished_requests(list(units))
    store.add_cache_hits(run_id, teacher.name, len(cached))
    todo = {k: u for k, u in units.items() if k not in cached}
    name = label or teacher.name
    print(f"[{name}] {len(cached)} done, {len(todo)} to go over {workers} shard(s) ({executor})",
          file=sys.stderr, flush=True)
    if not todo:
        return cached
    root = shard_root(store.path, teacher, params, purpose, workers)
    root.mkdir(parents=True, exist_ok=True)
    spent = sum(r["cost_usd"] or 0.0 for r in cached.values())
    share = _shard_options(options, workers, spent)
    by_shard: dict[int, dict[str, Job]] = {}
    for key, (job, _) in todo.items():
        by_shard.setdefault(shard_index(job.prompt_id, workers), {})[job.prompt_id + job.rendered] = job
    specs, shard_of = [], {}
    for index, shard_jobs in sorted(by_shard.items()):
        shard_store = root / f"shard-{index}.duckdb"
        _seed(store, shard_store, list(shard_jobs.values()), model_key(teacher), params, todo)
        spec = root / f"shard-{index}.json"
        spec.write_text(json.dumps(dict(
            index=index, store=str(shard_store), teacher=_teacher_settings(teacher, key_env, workers),
            jobs=[asdict(j) for j in shard_jobs.values()], params=params.as_dict(), purpose=purpose,
            run_id=run_id, options=share)))
        specs.append(spec)
        shard_of[len(specs) - 1] = shard_store
    if executor == "slurm":
        return _slurm(store, root, specs, shard_of, todo, run_id, postprocess, units)
    if executor == "ray":
        results = _run_ray(specs, workers)
    else:
        with _environment(SHARD_KEY_ENV, passed_key):  # spawned workers inherit it; no file holds it
            results = _run_local(specs, workers)
    for shard_store in shard_of.values():
        ingest(store, shard_store, todo, run_id, postprocess)
    errors = [r["error"] for r in results.values() if r.get("error")]
    if not errors and len(store.finished_requests(list(todo))) == len(todo):
        shutil.rmtree(root, ignore_errors=True)  # everything is in the main store now
    if errors:
        raise DistillError(f"teacher {teacher.name}: {len(errors)} of {len(specs)} shard(s) stopped: {errors[0]}")
    return store.finished_requests(list(units))


def _seed(store: Store, shard_store: Path, jobs: list[Job], model: str, params: GenParams, todo: dict) -> None:
    """Give a shard the main store's finished rows of its jobs' other samples, so a job half done
    before sharding does not pay for its finished samples again."""
    keys = [request_key(model, j.rendered, params, i) for j in jobs for i in range(params.num_samples)]
    done = [r for r in store.finished_requests([k for k in keys if k not in todo]).values()]
    with Store(shard_store) as shard:
        if done:
            shard.add_requests_and_samples(done, [])


def _slurm(store: Store, root: Path, specs: list[Path], shard_of: dict[int, Path], todo: dict, run_id: str,
           postprocess: Postprocess | None, units: dict) -> dict[str, dict]:
    """Ingest the shards Slurm finished; if some have not run, say how to run them (exit 3)."""
    script = write_sbatch(root, specs)
    finished = [i for i, shard_store in shard_of.items() if Path(f"{shard_store}.done").exists()]
    for i in finished:
        ingest(store, shard_of[i], todo, run_id, postprocess)
    if len(finished) < len(specs):
        raise RequestsIncomplete(f"incomplete: {len(specs) - len(finished)} of {len(specs)} shard(s) have not run: "
                                 f"submit them with `sbatch {script}`, then run this command again to ingest")
    shutil.rmtree(root, ignore_errors=True)
    return store.finished_requests(list(units))


if __name__ == "__main__":  # a Slurm array task: python -m engine.sharded <spec.json>
    print(json.dumps(run_shard(sys.argv[1])))
