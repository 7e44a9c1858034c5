"""Provider batch APIs (OpenAI's Batch API) for API teachers, resumable through the store.

Same request keys and request rows as `engine.engine.run_requests`, but the calls go out as one
uploaded JSONL file per batch (half price at OpenAI, no rate limits to pace). Every request sent is
stored at once with status 'submitted' and its batch id in `extra`, so a crash between submit and
collect never pays twice: the next run finds the batch (`pending_batches`) and collects it.
Collected lines become 'done' rows (tokens, cost, postprocessed samples) or 'error' rows (error
class, scrubbed message); a re-run submits only the keys that are neither done nor in flight.

Transport: the `openai` SDK's AsyncOpenAI(base_url=api_base), not litellm. litellm 1.106's
acreate_file / acreate_batch / aretrieve_batch / afile_content do reach a custom api_base, but
each call builds a fresh AsyncOpenAI that is never closed (a leaked connection per poll over a
24 h batch), acreate_file takes no client of ours, and its success logger re-downloads a
completed batch's output file to price it. litellm still names the provider and prices tokens.
"""
from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, TypeVar

import litellm
import openai
from litellm.cost_calculator import batch_cost_calculator

from store.store import Store
from core.errors import DistillError
from clients.api_errors import ApiError, classify, scrub, split_reasoning
from clients.api import ApiTeacher
from engine.jobs import GenParams, Job, model_key, Postprocess, request_key
from clients.types import Generation

ENDPOINT = "/v1/chat/completions"
SUBMITTED = "submitted"
TERMINAL = ("completed", "failed", "expired", "cancelled")
MAX_REQUESTS, MAX_BYTES = 50_000, 190 * 2**20  # OpenAI's caps per batch: 50,000 lines, a 200 MB file
POLL_FAILURES = 5  # consecutive failed polls before giving up (the rows stay submitted)
T = TypeVar("T")


@dataclass
class BatchStats:
    """What a batch run did; pass one in to read it afterwards (tests, CLI summaries)."""

    batches: int = 0  # batches submitted by this run
    submitted: int = 0  # requests sent in them
    collected: int = 0  # batches collected (resumed ones included)
    done: int = 0
    failed: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    errors: Counter = field(default_factory=Counter)  # failed requests by error class


def _client(teacher: ApiTeacher) -> openai.AsyncOpenAI:
    """A client of the teacher's server (use it in `async with`); refuses providers without this format."""
    provider = litellm.get_llm_provider(teacher.model)[1]
    if provider != "openai":
        raise DistillError(f"teacher {teacher.name}: batch mode needs an OpenAI-compatible teacher "
                           f"(api:openai/<model>, optionally with --api-base), not provider {provider!r}")
    if teacher.replicas is not None:  # a batch lives on one server: its id means nothing to the others
        raise DistillError(f"teacher {teacher.name}: --batch takes one --api-base, not a list of replicas")
    key = teacher.secret() or ("none" if teacher.api_base else None)  # local servers need no key
    if key is None:
        raise DistillError(f"teacher {teacher.name}: no API key; set {teacher.api_key_env or 'OPENAI_API_KEY'}")
    # The SDK retries 429 / 5xx / dropped connections twice with backoff: right for uploads and polls.
    return openai.AsyncOpenAI(base_url=teacher.api_base, api_key=key, timeout=max(60.0, teacher.timeout_s))


def _fail(teacher: ApiTeacher, what: str, exc: BaseException) -> DistillError:
    err = classify(exc, teacher.secret())
    hint = (f"; set {teacher.api_key_env or 'the key'} to a valid key" if err.kind == "auth"
            else "; re-run to retry (submitted requests stay recorded)")
    return DistillError(f"teacher {teacher.name}: batch {what} failed ({err.kind}: {err.message[:200]}){hint}")


def _in_flight(store: Store, teacher: ApiTeacher) -> dict[str, str]:
    """request key -> batch id of this teacher's requests submitted but not yet collected."""
    return {r["key"]: json.loads(r["extra"])["batch_id"] for r in store.submitted_requests(teacher.name)}


def pending_batches(store: Store, teacher: ApiTeacher, keys: list[str] | None = None) -> list[str]:
    """Batch ids with submitted, uncollected requests (among `keys` if given), oldest first."""
    wanted = None if keys is None else set(keys)
    return list(dict.fromkeys(b for k, b in _in_flight(store, teacher).items() if wanted is None or k in wanted))


# ---- submit ----------------------------------------------------------------------------------------

def _line(teacher: ApiTeacher, model: str, key: str, job: Job, index: int, params: GenParams) -> bytes:
    """One JSONL line: the chat body `ApiTeacher.agenerate` would send (same seed rule as api_engine)."""
    body: dict[str, Any] = {**teacher.extra_params, "model": model, "messages": teacher.messages(job.rendered),
                            "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                            "seed": params.seed * 1000 + index}
    if params.stop:
        body["stop"] = list(params.stop)[:4]  # OpenAI accepts at most four stop strings
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


async def asubmit_batch(store: Store, teacher: ApiTeacher, jobs: list[Job], params: GenParams, *, purpose: str,
                        run_id: str, max_requests: int = MAX_REQUESTS, stats: BatchStats | None = None) -> str | None:
    """Upload one batch of the requests neither done nor in flight; its id, or None if none is missing."""
    model = litellm.get_llm_provider(teacher.model)[0]
    units = {request_key(model_key(teacher), j.rendered, params, i): (j, i) for j in jobs for i in range(params.num_samples)}
    skip = set(store.finished_requests(list(units))) | set(_in_flight(store, teacher))
    lines: list[bytes] = []
    todo: list[tuple[str, Job, int]] = []
    size = 0
    for key, (job, index) in units.items():  # a dict: duplicate jobs share a key and are sent once
        if key in skip:
            continue
        line = _line(teacher, model, key, job, index, params)
        if len(todo) >= max_requests or (todo and size + len(line) > MAX_BYTES):
            break  # the rest goes into the next batch
        lines.append(line)
        size += len(line)
        todo.append((key, job, index))
    if not todo:
        return None
    try:
        async with _client(teacher) as client:
            file = await client.files.create(file=("distill-batch.jsonl", b"".join(lines), "application/jsonl"),
                                             purpose="batch")
            # No retries here: a create that timed out may exist already, and a retry would pay twice.
            batch = await client.with_options(max_retries=0).batches.create(
                completion_window="24h", endpoint=ENDPOINT, input_file_id=file.id,
                metadata={"distill_teacher": teacher.name[:512], "distill_run": run_id})
    except Exception as exc:
        raise _fail(teacher, "submit", exc) from None
    # Recorded as soon as the provider accepted it: from here a crash costs nothing, the next run
    # collects this batch. (A crash inside batches.create would orphan it; its metadata names the
    # teacher and run, so it can be found in the provider's batch list.)
    store.add_requests_and_samples([dict(
        key=key, model=teacher.name, prompt_id=job.prompt_id, template_hash=job.template_hash,
        params=params.as_dict(), params_hash=params.hash(), sample_index=index, purpose=purpose,
        rendered=job.rendered, status=SUBMITTED, response=None, prompt_tokens=None, completion_tokens=None,
        cost_usd=0.0, latency_s=None, finish_reason=None, error=None,
        extra={"batch_id": batch.id, "submitted_at": time.time()}, run_id=run_id) for key, job, index in todo], [])
    if stats is not None:
        stats.batches, stats.submitted = stats.batches + 1, stats.submitted + len(todo)
    return batch.id


# ---- collect ---------------------------------------------------------------------------------------

async def _poll(teacher: ApiTeacher, client: openai.AsyncOpenAI, batch_id: str, poll_s: float,
                max_wait_s: float | None) -> Any:
    """The batch once terminal; its last state if `max_wait_s` ran out; None if the provider lost it."""
    failures, batch = 0, None
    deadline = None if max_wait_s is None else time.monotonic() + max_wait_s
    while True:
        try:
            batch = await client.batches.retrieve(batch_id)
            failures = 0
        except Exception as exc:
            err = classify(exc, teacher.secret())
            if err.status == 404:
                return None
            failures += 1
            if err.kind == "auth" or not err.retryable or failures >= POLL_FAILURES:
                raise _fail(teacher, f"{batch_id} poll", exc) from None
        if (batch is not None and batch.status in TERMINAL) or (deadline is not None and time.monotonic() >= deadline):
            return batch
        await asyncio.sleep(poll_s)


async def _lines(teacher: ApiTeacher, client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict]:
    """custom_id -> line of one result file (none without a file)."""
    if not file_id:
        return {}
    try:
        content = await client.files.content(file_id)
    except Exception as exc:
        raise _fail(teacher, f"download of {file_id}", exc) from None
    out = {}
    for text in content.content.decode("utf-8", "replace").splitlines():
        try:
            line = json.loads(text)
            out[line["custom_id"]] = line
        except (ValueError, KeyError, TypeError):
            continue  # an unreadable line: its request counts as missing and is stored as an error
    return out


def _generation(teacher: ApiTeacher, line: dict | None, msgs: list[dict], missing: ApiError) -> Generation:
    """The Generation in one result line, or the ApiError (classified, not yet scrubbed) it stands for."""
    if line is None:
        raise missing
    response, error = line.get("response"), line.get("error") or {}
    if not response:
        code = error.get("code") or "server_error"
        raise ApiError("expired" if code == "batch_expired" else "server_error",
                       f"{code}: {error.get('message', 'no response')}")
    body, status = response.get("body"), int(response.get("status_code") or 500)
    if status != 200:
        detail = body.get("error", body) if isinstance(body, dict) else body
        detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        kind = ("rate_limit" if status == 429 else "auth" if status in (401, 403) else
                "bad_request" if 400 <= status < 500 and status not in (408, 409) else "server_error")
        raise ApiError(kind, f"HTTP {status}: {detail}", status=status)
    try:
        choice = body["choices"][0]
        message, usage = choice["message"], body.get("usage") or {}
        text, reasoning = split_reasoning(message.get("content"), message.get("reasoning_content"))
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ApiError("malformed", f"batch line without a chat completion ({type(exc).__name__})") from None
    prompt_tokens = int(usage.get("prompt_tokens") or sum(len(str(m.get("content", ""))) for m in msgs) // 4)
    completion_tokens = int(usage.get("completion_tokens") or len(text + (reasoning or "")) // 4)
    return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      finish_reason="length" if choice.get("finish_reason") in ("length", "max_tokens") else "stop",
                      reasoning=reasoning, cost_usd=_cost(teacher, prompt_tokens, completion_tokens))


def _cost(teacher: ApiTeacher, prompt_tokens: int, completion_tokens: int) -> float:
    """The user's --price via teacher.cost, else litellm's batch prices (half the live ones at OpenAI)."""
    if teacher.price_per_mtok is not None:
        return teacher.cost(None, prompt_tokens, completion_tokens)
    usage = litellm.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          total_tokens=prompt_tokens + completion_tokens)
    try:
        return float(sum(batch_cost_calculator(usage, teacher.model)))
    except Exception:  # a model litellm cannot price: unknown, so 0 (as teacher.cost does)
        return 0.0


def _missing(batch: Any) -> ApiError:
    """Why a request has no result line: the batch's fate decides its error class."""
    if batch is None:
        return ApiError("batch_lost", "the provider no longer knows this batch")
    if batch.status == "failed":
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        detail = "; ".join(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}" for e in errors[:3])
        return ApiError("batch_failed", f"the batch failed validation ({detail or 'no detail'})")
    if batch.status in ("expired", "cancelled"):
        return ApiError(batch.status, f"the batch was {batch.status} before this request ran")
    return ApiError("server_error", "the batch finished without a result for this request")


async def acollect_batch(store: Store, teacher: ApiTeacher, batch_id: str, *, run_id: str | None = None,
                         postprocess: Postprocess | None = None, poll_s: float = 30.0,
                         max_wait_s: float | None = None, stats: BatchStats | None = None) -> dict[str, dict]:
    """Wait for a batch and store its results as done / error rows; its finished rows by key.

    If `max_wait_s` runs out first, nothing is written: the rows stay submitted for a later run.
    """
    rows = store.submitted_requests(teacher.name, batch_id)
    if not rows:
        return {}
    keys = [r["key"] for r in rows]
    async with _client(teacher) as client:
        batch = await _poll(teacher, client, batch_id, poll_s, max_wait_s)
        if batch is not None and batch.status not in TERMINAL:
            print(f"[{teacher.name}] batch {batch_id} is still {batch.status}; re-run to collect it",
                  file=sys.stderr, flush=True)
            return store.finished_requests(keys)
        lines = {}
        if batch is not None:
            lines = {**await _lines(teacher, client, batch.error_file_id),
                     **await _lines(teacher, client, batch.output_file_id)}
    stats = stats if stats is not None else BatchStats()
    stats.collected += 1
    secret, missing, now = teacher.secret(), _missing(batch), time.time()
    requests, samples = [], []
    for row in rows:
        submitted_at = json.loads(row["extra"] or "{}").get("submitted_at", now)
        out = {**row, "run_id": run_id or row["run_id"], "latency_s": now - submitted_at}
        extra: dict[str, Any] = {"batch_id": batch_id}
        try:
            gen = _generation(teacher, lines.get(row["key"]), teacher.messages(row["rendered"]), missing)
        except ApiError as err:
            stats.failed += 1
            stats.errors[err.kind] += 1
            requests.append({**out, "status": "error", "response": None, "prompt_tokens": None,
                             "completion_tokens": None, "cost_usd": 0.0, "finish_reason": None,
                             "error": scrub(f"{err.kind}: {err.message}", secret)[:1000],
                             "extra": {**extra, "error_class": err.kind}})
            continue
        if gen.reasoning:
            extra["reasoning"] = gen.reasoning
        if postprocess is not None:  # as in api_engine: extra request fields and sample rows per sample
            job = Job(prompt_id=row["prompt_id"], rendered=row["rendered"], template_hash=row["template_hash"])
            more, sample_rows = postprocess(job, row["sample_index"], gen, row["key"])
            extra.update(more)
            samples += [dict(s, run_id=out["run_id"]) for s in sample_rows]
        stats.done, stats.cost_usd = stats.done + 1, stats.cost_usd + gen.cost_usd
        stats.tokens += gen.prompt_tokens + gen.completion_tokens
        requests.append({**out, "status": "done", "response": gen.text, "prompt_tokens": gen.prompt_tokens,
                         "completion_tokens": gen.completion_tokens, "cost_usd": gen.cost_usd,
                         "finish_reason": gen.finish_reason, "error": None, "extra": extra})
    store.add_requests_and_samples(requests, samples)  # one transaction: the whole batch or none of it
    return store.finished_requests(keys)


# ---- the whole loop --------------------------------------------------------------------------------

async def arun_batch(store: Store, teacher: ApiTeacher, jobs: list[Job], params: GenParams, *, purpose: str,
                     run_id: str, postprocess: Postprocess | None = None, poll_s: float = 30.0,
                     max_wait_s: float | None = None, max_requests: int = MAX_REQUESTS,
                     stats: BatchStats | None = None, label: str = "") -> dict[str, dict]:
    """Collect pending batches, submit what is missing or failed, collect that: `run_requests`'s contract."""
    stats, name = stats if stats is not None else BatchStats(), label or teacher.name
    keys = list(dict.fromkeys(request_key(model_key(teacher), j.rendered, params, i)
                              for j in jobs for i in range(params.num_samples)))
    wait = dict(run_id=run_id, postprocess=postprocess, poll_s=poll_s, max_wait_s=max_wait_s, stats=stats)
    pending = pending_batches(store, teacher, keys)
    done_before = len(store.finished_requests(keys))
    store.add_cache_hits(run_id, teacher.name, done_before)
    print(f"[{name}] {done_before} done, {len(pending)} pending batch(es) to collect first",
          file=sys.stderr, flush=True)
    for batch_id in pending:  # a crash after submit: collect, never resubmit
        await acollect_batch(store, teacher, batch_id, **wait)
    submitted = []
    while (batch_id := await asubmit_batch(store, teacher, jobs, params, purpose=purpose, run_id=run_id,
                                           max_requests=max_requests, stats=stats)) is not None:
        submitted.append(batch_id)
    print(f"[{name}] submitted {stats.submitted} request(s) in {len(submitted)} batch(es)", file=sys.stderr, flush=True)
    for batch_id in submitted:
        await acollect_batch(store, teacher, batch_id, **wait)
    errors = " ".join(f"{k}={v}" for k, v in sorted(stats.errors.items()))
    print(f"[{name}] batch: {stats.done} done, {stats.failed} failed, ${stats.cost_usd:.4f}"
          + (f", errors {errors}" if errors else ""), file=sys.stderr, flush=True)
    return store.finished_requests(keys)


def _blocking(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """The sync twin of an async function; inside a running loop (a notebook) it runs on a thread."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kwargs))
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, fn(*args, **kwargs)).result()
    return run


# Sync twins with the same arguments, for the sync stages (as run_api_requests is for api_engine).
submit_batch = _blocking(asubmit_batch)
collect_batch = _blocking(acollect_batch)
run_batch = _blocking(arun_batch)
