"""The async request engine for API teachers: the contract of `engine.engine.run_requests`.

Same request keys, same request rows, same return value, so every stage can swap a local
teacher for an API one. What differs is how calls are made: up to `max_concurrency` in
flight, throttled by requests/min and tokens/min buckets, cut back on 429 (AIMD), retried
with exponential backoff and jitter (honouring Retry-After), stopped by a circuit breaker
when the teacher keeps failing and by a budget before it overspends. A producer feeds a
bounded queue (a million prompts never become a million tasks) and one writer task owns
the store, since DuckDB has one writer.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from tqdm.auto import tqdm

from store.store import Store
from core.errors import DistillError
from clients.api_errors import ApiError
from clients.api import ApiTeacher
from engine.jobs import GenParams, Job, model_key, Postprocess, request_key
from engine.limits import AdaptiveConcurrency, Budget, CircuitBreaker, TokenBucket, estimate_cost, estimate_tokens

WRITE_EVERY = 64  # rows per store transaction
WRITE_INTERVAL_S = 0.5  # or this often, so a slow trickle is still saved promptly


@dataclass
class RunStats:
    """What a run did; pass one in to read it afterwards (tests, CLI summaries)."""

    calls: int = 0  # HTTP attempts, retries included
    done: int = 0
    failed: int = 0  # requests stored with status 'error'
    skipped: int = 0  # not started: budget or breaker stopped the run
    cached: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    errors: Counter = field(default_factory=Counter)  # attempts by error class
    lowest_concurrency: int = 0
    final_concurrency: int = 0


@dataclass
class _Unit:
    job: Job
    index: int
    key: str


@dataclass
class _Result:
    unit: _Unit
    row: dict
    gen: Any = None  # the Generation when the call succeeded


class _Run:
    def __init__(self, store: Store, teacher: ApiTeacher, params: GenParams, *, purpose: str, run_id: str,
                 postprocess: Postprocess | None, max_concurrency: int, rpm: float | None, tpm: float | None,
                 max_budget_usd: float | None, max_retries: int, spent_before: float, stats: RunStats,
                 backoff_base_s: float, backoff_cap_s: float) -> None:
        self.store, self.teacher, self.params = store, teacher, params
        self.params_dict, self.params_hash = params.as_dict(), params.hash()  # once, not per row
        self.purpose, self.run_id, self.postprocess = purpose, run_id, postprocess
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.conc = AdaptiveConcurrency(max_concurrency, minimum=1, maximum=max_concurrency)
        self.rpm = TokenBucket(rpm) if rpm else None
        self.tpm = TokenBucket(tpm) if tpm else None
        self.breaker = CircuitBreaker()
        self.budget = Budget(max_budget_usd, spent_before)
        self.prices = teacher.price_per_token()
        self.stats = stats
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.stop = False
        self.rng = random.Random()

    # ---- one request, with retries ---------------------------------------------------------

    async def call(self, unit: _Unit) -> _Result | None:
        """The stored outcome of one request, or None when it was never started (budget)."""
        est_in = estimate_tokens(unit.job.rendered)
        reserve = estimate_cost(est_in, self.params.max_new_tokens, self.prices)
        if not self.budget.try_reserve(reserve):
            self.stop = True
            return None
        began = time.perf_counter()
        error: ApiError | None = None
        attempt, cost = 0, 0.0
        try:
            for attempt in range(self.max_retries + 1):
                if self.stop and self.breaker.is_open:
                    return None  # stored as not started by the caller
                if self.rpm:
                    await self.rpm.take(1)
                est_tokens = est_in + self.params.max_new_tokens
                if self.tpm:
                    await self.tpm.take(est_tokens)
                epoch = await self.conc.acquire()
                self.stats.calls += 1
                try:
                    gen = await self.teacher.agenerate(
                        unit.job.rendered, max_new_tokens=self.params.max_new_tokens,
                        temperature=self.params.temperature, stop=list(self.params.stop),
                        # distinct per sample, or providers that honour seeds return N copies
                        seed=self.params.seed * 1000 + unit.index)
                except ApiError as exc:
                    error = exc
                finally:
                    self.conc.release()
                if error is None:
                    self.conc.on_success()
                    self.breaker.record(None)
                    if self.tpm:
                        self.tpm.adjust(gen.prompt_tokens + gen.completion_tokens - est_tokens)
                    cost = gen.cost_usd
                    return _Result(unit, self._row(unit, gen, began, attempt), gen)
                self.stats.errors[error.kind] += 1
                if self.tpm:
                    self.tpm.adjust(-est_tokens)  # a failed call used no tokens: give them back
                if error.kind == "rate_limit":
                    self.conc.on_rate_limit(epoch)
                    self.stats.lowest_concurrency = min(self.stats.lowest_concurrency, self.conc.limit)
                if error.kind == "auth":
                    raise DistillError(f"teacher {self.teacher.name}: the API rejected the key "
                                       f"({error.message[:200]}); set {self.teacher.api_key_env or 'the key'} "
                                       "to a valid key")
                if not error.retryable or attempt == self.max_retries:
                    break
                await asyncio.sleep(self._backoff(attempt, error.retry_after))
                error = None
            # Only a failure that outlived its retries counts: transient faults a retry fixed do not
            # open the breaker (at 50% dropped connections every request still gets through).
            if error is not None:
                self.breaker.record(error.kind)
                self.stop = self.stop or self.breaker.is_open
            return _Result(unit, self._row(unit, None, began, attempt, error))
        finally:
            # Swap the reservation for the real cost in one step, so no other request can
            # slip into a gap where this call's spend is counted nowhere.
            self.budget.settle(reserve, cost)

    def _not_started(self) -> ApiError:
        why = "the circuit breaker opened" if self.breaker.is_open else "the budget was reached"
        return ApiError("not_started", f"{why} before this request was sent; a re-run sends it")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # Jitter (50-100% of an exponential step) spreads the retries of a 429 burst apart; a
        # Retry-After from the server is a floor, never shortened by the jitter.
        delay = self.rng.uniform(0.5, 1.0) * min(self.backoff_cap_s, self.backoff_base_s * 2 ** attempt)
        return max(delay, retry_after or 0.0)

    def _row(self, unit: _Unit, gen: Any, began: float, attempt: int, error: ApiError | None = None) -> dict:
        ok = gen is not None
        extra: dict = {"attempts": attempt + 1}
        if ok and gen.reasoning:
            extra["reasoning"] = gen.reasoning
        if error is not None:
            extra["error_class"] = error.kind
        return dict(
            key=unit.key, model=self.teacher.name, prompt_id=unit.job.prompt_id,
            template_hash=unit.job.template_hash, params=self.params_dict, params_hash=self.params_hash,
            sample_index=unit.index, purpose=self.purpose, rendered=unit.job.rendered,
            status="done" if ok else "error", response=gen.text if ok else None,
            prompt_tokens=gen.prompt_tokens if ok else None, completion_tokens=gen.completion_tokens if ok else None,
            cost_usd=gen.cost_usd if ok else 0.0, latency_s=time.perf_counter() - began,
            finish_reason=gen.finish_reason if ok else None,
            error=None if ok else f"{error.kind}: {error.message}"[:1000], extra=extra, run_id=self.run_id)

    # ---- producer, workers, writer -----------------------------------------------------------

    async def run(self, units: Iterator[_Unit], n_todo: int, bar: tqdm) -> None:
        queue: asyncio.Queue[_Unit | None] = asyncio.Queue(maxsize=2 * self.max_concurrency)
        results: asyncio.Queue[_Result | None] = asyncio.Queue(maxsize=4 * WRITE_EVERY)

        async def produce() -> None:
            for unit in units:  # all of them: a request not started after a stop still gets its row
                await queue.put(unit)
            for _ in range(self.max_concurrency):
                await queue.put(None)

        async def work() -> None:
            while (unit := await queue.get()) is not None:
                result = None if self.stop else await self.call(unit)
                if result is None:  # the breaker or the budget stopped the run before this request
                    self.stats.skipped += 1
                    result = _Result(unit, self._row(unit, None, time.perf_counter(), -1, self._not_started()))
                await results.put(result)

        writer = asyncio.create_task(self.write(results, bar))
        workers = [asyncio.create_task(work()) for _ in range(min(self.max_concurrency, max(1, n_todo)))]
        self.max_concurrency = len(workers)  # one sentinel per worker
        producer = asyncio.create_task(produce())
        calls = asyncio.gather(producer, *workers)
        # Mark its outcome read: when we cancel it after a writer error, asyncio would
        # otherwise log "exception was never retrieved" for an error already handled.
        calls.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            # Watch the writer too: if it dies (a postprocess or store error), workers would
            # otherwise block forever on a full results queue.
            await asyncio.wait({calls, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():
                await writer  # raises the writer's error
            await calls  # raises a worker's error (auth, breaker) after the finally below
        finally:
            tasks = (producer, *workers)
            for task in tasks:  # a finished gather does not cancel its siblings by itself
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not writer.done():
                await results.put(None)
                await writer  # whatever finished is saved, also on Ctrl-C or a worker error

    async def write(self, results: asyncio.Queue, bar: tqdm) -> None:
        pending: list[_Result] = []
        last = shown = started = time.monotonic()
        while True:
            try:
                item = await asyncio.wait_for(results.get(), timeout=WRITE_INTERVAL_S)
            except asyncio.TimeoutError:
                item = ...
            if isinstance(item, _Result):
                pending.append(item)
            if pending and (item is None or len(pending) >= WRITE_EVERY or time.monotonic() - last >= WRITE_INTERVAL_S):
                self.flush(pending)
                bar.update(len(pending))
                pending, last = [], time.monotonic()
            if time.monotonic() - shown >= WRITE_INTERVAL_S or item is None:
                self._postfix(bar, time.monotonic() - started)
                shown = time.monotonic()
            if item is None:
                return

    def flush(self, batch: list[_Result]) -> None:
        requests, samples = [], []
        for res in batch:
            if res.gen is not None:
                extra, sample_rows = (self.postprocess(res.unit.job, res.unit.index, res.gen, res.unit.key)
                                      if self.postprocess else ({}, []))
                res.row["extra"] = {**res.row["extra"], **extra}
                samples += [dict(s, run_id=self.run_id) for s in sample_rows]
                self.stats.done += 1
                self.stats.tokens += res.gen.prompt_tokens + res.gen.completion_tokens
                self.stats.cost_usd += res.gen.cost_usd
            else:
                self.stats.failed += 1
            requests.append(res.row)
        self.store.add_requests_and_samples(requests, samples)

    def _postfix(self, bar: tqdm, elapsed: float) -> None:
        s = self.stats
        seen = s.cached + s.done + s.failed
        errors = " ".join(f"{k}={v}" for k, v in sorted(s.errors.items()))
        bar.set_postfix_str(
            f"{(s.done + s.failed) / max(elapsed, 1e-9):.1f} rows/s, {s.tokens / max(elapsed, 1e-9):.0f} tok/s, "
            f"${self.budget.already + s.cost_usd:.4f}, cache {100 * s.cached / max(seen, 1):.0f}%, "
            f"conc {self.conc.limit}" + (f", errors {errors}" if errors else ""))


async def arun_api_requests(store: Store, teacher: ApiTeacher, jobs: list[Job], params: GenParams, *,
                            purpose: str, run_id: str, postprocess: Postprocess | None = None,
                            max_concurrency: int = 64, rpm: float | None = None, tpm: float | None = None,
                            max_budget_usd: float | None = None, max_retries: int = 10, label: str = "",
                            stats: RunStats | None = None, backoff_base_s: float = 1.0,
                            backoff_cap_s: float = 60.0) -> dict[str, dict]:
    """Call the API for what the cache lacks; return every job's done request rows by key."""
    stats = stats if stats is not None else RunStats()
    units = [_Unit(j, i, request_key(model_key(teacher), j.rendered, params, i))
             for j in jobs for i in range(params.num_samples)]
    all_keys = list(dict.fromkeys(u.key for u in units))
    cached = store.finished_requests(all_keys)
    store.add_cache_hits(run_id, teacher.name, len(cached))
    spent = sum(r["cost_usd"] or 0.0 for r in cached.values())
    seen: set[str] = set(cached)
    todo = []
    for u in units:  # duplicate jobs share a key: call it once
        if u.key not in seen:
            seen.add(u.key)
            todo.append(u)
    stats.cached = len(cached)
    name = label or teacher.name
    print(f"[{name}] {len(cached)} done, {len(todo)} to go, ${spent:.4f} spent so far",
          file=sys.stderr, flush=True)
    run = _Run(store, teacher, params, purpose=purpose, run_id=run_id, postprocess=postprocess,
               max_concurrency=max(1, max_concurrency), rpm=rpm, tpm=tpm, max_budget_usd=max_budget_usd,
               max_retries=max_retries, spent_before=spent, stats=stats, backoff_base_s=backoff_base_s,
               backoff_cap_s=backoff_cap_s)
    stats.lowest_concurrency = run.conc.limit
    if todo:
        bar = tqdm(total=len(todo), desc=name, unit="req", file=sys.stderr)
        # One pooled HTTP session for the whole run (direct calls to OpenAI-compatible servers).
        session = getattr(teacher, "session", None)
        try:
            async with (session() if session else contextlib.nullcontext()):
                await run.run(iter(todo), len(todo), bar)
        finally:
            bar.close()
    stats.final_concurrency = run.conc.limit
    run.breaker.check(teacher.name)
    if run.budget.exhausted:
        raise DistillError(
            f"teacher {teacher.name}: budget ${max_budget_usd:.4f} reached (${stats.cost_usd:.4f} spent this run, "
            f"{stats.skipped} requests not started); raise the budget and re-run to continue")
    return store.finished_requests(all_keys)


# max_retries 10: at 50% transient faults (dropped connections, 5xx, malformed bodies) eleven attempts leave one
# request in 2,048 failed, so a run finishes in one go; the breaker sees only what outlives them.
def run_api_requests(store: Store, teacher: ApiTeacher, jobs: list[Job], params: GenParams, *,
                     purpose: str, run_id: str, postprocess: Postprocess | None = None,
                     max_concurrency: int = 64, rpm: float | None = None, tpm: float | None = None,
                     max_budget_usd: float | None = None, max_retries: int = 10, label: str = "",
                     **options: Any) -> dict[str, dict]:
    """Sync wrapper of `arun_api_requests` (same options), callable from sync stages."""
    coro = arun_api_requests(store, teacher, jobs, params, purpose=purpose, run_id=run_id,
                             postprocess=postprocess, max_concurrency=max_concurrency, rpm=rpm, tpm=tpm,
                             max_budget_usd=max_budget_usd, max_retries=max_retries, label=label, **options)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Inside a running loop (a notebook): run ours on a thread; the store is not used meanwhile.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
