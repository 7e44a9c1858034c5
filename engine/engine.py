"""Run teacher requests through the store's request cache, in resumable chunks.

A request key hashes model + rendered prompt + generation params + sample index. Before
generating, the engine asks the store which keys already finished; only the rest run. Each
chunk is written in one transaction, so kill -9 loses at most the chunk in flight and a
re-run repeats no finished teacher call.
"""
from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from store.store import Store
from clients.teachers import Teacher
from engine.jobs import GenParams, Job, model_key, Postprocess, request_key


def run_requests(store: Store, teacher: Teacher, jobs: list[Job], params: GenParams, *,
                 purpose: str, run_id: str, postprocess: Postprocess | None = None,
                 chunk_size: int = 16, label: str = "") -> dict[str, dict]:
    """Generate what the cache lacks; return every job's request rows keyed by request key."""
    if hasattr(teacher, "agenerate"):  # API teachers: async, rate-limited, retried (engine.api_engine)
        options = dict(getattr(teacher, "run_options", {}))
        batch = {k: options.pop(k) for k in ("batch", "poll_s", "max_wait_s") if k in options}
        if batch.pop("batch", False):  # the provider's batch API: cheaper, slower, same contract
            from engine.batch_api import run_batch
            return run_batch(store, teacher, jobs, params, purpose=purpose, run_id=run_id,
                             postprocess=postprocess, label=label, **batch)
        shards = {k: options.pop(k) for k in ("workers", "executor") if k in options}
        if shards:  # N workers, each on its own shard store (engine.sharded), ingested here
            from engine.sharded import run_sharded
            return run_sharded(store, teacher, jobs, params, purpose=purpose, run_id=run_id,
                               postprocess=postprocess, label=label, **shards, **options)
        from engine.api_engine import run_api_requests
        return run_api_requests(store, teacher, jobs, params, purpose=purpose, run_id=run_id,
                                postprocess=postprocess, label=label, **options)
    keys = {(j.prompt_id, j.rendered, i): request_key(model_key(teacher), j.rendered, params, i)
            for j in jobs for i in range(params.num_samples)}
    cached = store.finished_requests(list(keys.values()))
    store.add_cache_hits(run_id, teacher.name, len(cached))
    unique = {(j.prompt_id, j.rendered): j for j in jobs}  # duplicate jobs share keys: generate once
    todo = [j for u, j in unique.items() if any(keys[(*u, i)] not in cached for i in range(params.num_samples))]
    n_total = len(keys)
    print(f"[{label or teacher.name}] {n_total - (len(todo) * params.num_samples)} done, "
          f"{len(todo) * params.num_samples} to go (cache hits cost nothing)", file=sys.stderr, flush=True)
    # One bar for the whole stage (rate and ETA over every chunk), not one per chunk.
    bar = tqdm(total=len(todo) * params.num_samples, desc=label or teacher.name, unit="seq",
               file=sys.stderr, disable=not todo)
    hit_share = 1 - len(todo) * params.num_samples / max(1, n_total)
    new_tokens, stage_began = 0, time.perf_counter()
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        rate = new_tokens / max(1e-9, time.perf_counter() - stage_began)
        bar.set_postfix_str(f"prompts {start + len(chunk)}/{len(todo)}, {rate:.0f} tok/s, "
                            f"cache hits {hit_share:.0%}")
        began = time.perf_counter()
        outputs = teacher.generate([j.rendered for j in chunk], max_new_tokens=params.max_new_tokens,
                                   temperature=params.temperature, num_samples=params.num_samples,
                                   stop=list(params.stop), seed=params.seed + start)
        latency = (time.perf_counter() - began) / max(1, len(chunk) * params.num_samples)
        requests, samples = [], []
        for job, generations in zip(chunk, outputs):
            for i, gen in enumerate(generations):
                key = keys[(job.prompt_id, job.rendered, i)]
                if key in cached:
                    continue
                extra, sample_rows = postprocess(job, i, gen, key) if postprocess else ({}, [])
                requests.append(dict(
                    key=key, model=teacher.name, prompt_id=job.prompt_id, template_hash=job.template_hash,
                    params=params.as_dict(), params_hash=params.hash(), sample_index=i, purpose=purpose,
                    rendered=job.rendered, status="done", response=gen.text,
                    prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                    cost_usd=0.0, latency_s=latency, finish_reason=gen.finish_reason, error=None,
                    extra=extra, run_id=run_id))
                samples += [dict(s, run_id=run_id) for s in sample_rows]
                new_tokens += gen.completion_tokens
        store.add_requests_and_samples(requests, samples)
        bar.update(len(chunk) * params.num_samples)
    bar.close()
    return store.finished_requests(list(keys.values()))
