"""`distill serve`: an OpenAI-compatible HTTP server for a local model, with injected faults.

It stands in for a remote teacher API in tests and benchmarks: clients (the `openai` SDK,
litellm, plain HTTP) talk to it exactly as to a hosted API, while latency and failures
(429, 500, hangs, broken bodies, dropped connections) are injected on demand. Concurrent
requests are batched onto the model, which is where CPU throughput comes from.

example:
  distill serve --model smollm2-135m-instruct --port 8000 --latency 0.5 --faults 429:0.1,drop:0.02
  # then: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="sk-local").chat.completions.create(
  #           model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hi"}])
  distill serve --model echo --faults "429@1,3;500@2"   # no model: replies "echo: <first 8 words>"
  distill serve --cascade runs/eval/cascade.json          # student first, teacher when unsure

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, and the
Batch API (/v1/files, /v1/batches: synth/batch_server.py). /v1/completions also speaks vLLM's
`prompt_logprobs` (synth/prompt_logprobs.py): a teacher for `distill train onpolicy --teacher-url`.
Greedy answers do not depend on which requests share a batch; sampled ones (temperature > 0)
do, because the generator seeds each batch, not each row. A request without a seed uses --seed.
Unknown request fields (top_p, user, ...) are ignored, as most compatible servers do; streaming
is refused. Latency and faults apply to the two POST endpoints only. The Authorization header
is never read or logged and the access log is off.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Iterator

from aiohttp import web

from distill.errors import DistillError
from synth import batch_server
from synth import faults as fault_kinds
from synth import openai_api, prompt_logprobs
from synth.faults import FaultPlan, parse_faults
from synth.openai_api import DEFAULT_MAX_TOKENS, MAX_TOKENS_CAP  # noqa: F401  (re-exported)
from synth.openai_api import ApiError, GenParams, Reply, bad, check_common


# ---- backends --------------------------------------------------------------------------------------


def _split_words(text: str) -> list[str]:
    """Word "tokens" that concatenate back to `text` (spaces lead, as in BPE vocabularies)."""
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])] if text else []


class _EchoBackend:
    """No model: a deterministic reply from the last user message, so benchmarks measure the client."""

    def render(self, messages: list[dict[str, str]]) -> str:
        users = [m["content"] for m in messages if m["role"] == "user"]
        return users[-1] if users else ""

    async def generate(self, prompt: str, params: GenParams) -> list[Reply]:
        tokens = _split_words(" ".join(["echo:", *prompt.split()[:8]]))
        finish = "length" if len(tokens) > params.max_tokens else "stop"
        text = "".join(tokens[: params.max_tokens])
        cut = min((p for p in (text.find(s) for s in params.stop) if p >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        tokens = _split_words(text)
        reply = Reply(text, len(prompt.split()), finish, tokens, [0.0] * len(tokens))
        return [replace(reply, tokens=list(tokens), logprobs=list(reply.logprobs)) for _ in range(params.n)]

    async def score(self, body: dict[str, Any], default_seed: int) -> tuple[Any, list[dict[str, Any]]]:
        raise bad("prompt_logprobs and token-id prompts need a model: serve one with --model NAME", "prompt")

    def close(self) -> None:
        pass


@dataclass
class _Job:
    prompt: str
    params: GenParams
    future: asyncio.Future[list[Reply]]


# OpenAI's API allows up to 20 alternatives per token; record them all, serve what is asked.
MAX_TOP_LOGPROBS = 20


def _load_generator(model: str, batch_size: int) -> Any:
    from synth.local import LocalGenerator  # torch loads only when a real model is served

    return LocalGenerator(model, batch_size=batch_size)


class _ModelBackend:
    """Batches concurrent requests onto one LocalGenerator, run on a single worker thread.

    A collector takes the first queued request, waits up to `wait_s` for up to `max_batch`
    more, groups them by GenParams and runs one generate() per group. The model is not
    thread-safe, so one worker thread runs calls strictly one at a time; requests arriving
    meanwhile queue up and form the next batch.
    """

    def __init__(self, model: str, max_batch: int, wait_s: float, stats: _Stats) -> None:
        self.generator = _load_generator(model, max_batch)
        self.max_batch, self.wait_s, self.stats = max_batch, wait_s, stats
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="distill-serve-model")
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task[None] | None = None

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.generator.render(messages)
        except Exception as exc:  # e.g. a chat template that rejects this role order
            raise bad(f"cannot format these messages for the model: {exc}", "messages") from None

    async def generate(self, prompt: str, params: GenParams) -> list[Reply]:
        if self.queue is None:  # created lazily: it must belong to the server's event loop
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._collect_forever())
        job = _Job(prompt, params, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        return await job.future

    async def _collect(self, queue: asyncio.Queue[_Job]) -> list[_Job]:
        jobs = [await queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(jobs) < self.max_batch:
            if not queue.empty():
                jobs.append(queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _collect_forever(self) -> None:
        assert self.queue is not None
        while True:
            groups: dict[GenParams, list[_Job]] = defaultdict(list)
            for job in await self._collect(self.queue):
                groups[job.params].append(job)
            for params, jobs in groups.items():
                await self._run(params, jobs)

    async def _run(self, params: GenParams, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self._generate, [j.prompt for j in jobs], params)
        except Exception as exc:  # a model failure fails this group's requests (HTTP 500), not the server
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(ApiError(500, f"generation failed: {exc}"))
            return
        self.stats.add_batch(len(jobs))
        for job, replies in zip(jobs, out):
            if not job.future.done():
                job.future.set_result(replies)

    async def score(self, body: dict[str, Any], default_seed: int) -> tuple[Any, list[dict[str, Any]]]:
        """A vLLM scoring request (synth/prompt_logprobs.py) is a batch already (TRL sends a training
        batch at once), so it skips the collector and runs on the model thread between batches."""
        g = self.generator
        req = prompt_logprobs.parse(body, g.tokenizer, g.model.get_output_embeddings().weight.shape[0], default_seed)
        try:
            choices = await asyncio.get_running_loop().run_in_executor(
                self.executor, prompt_logprobs.score, g.model, g.tokenizer, req, self.max_batch)
        except Exception as exc:  # fails this request (HTTP 500), not the server
            raise ApiError(500, f"scoring failed: {exc}") from None
        self.stats.add_batch(len(req.sequences))
        return req, choices

    def _generate(self, prompts: list[str], params: GenParams) -> list[list[Reply]]:
        g = self.generator
        out = g.generate(prompts, max_new_tokens=params.max_tokens, temperature=params.temperature,
                         num_samples=params.n, stop=list(params.stop) or None, seed=params.seed,
                         top_k=MAX_TOP_LOGPROBS)
        return [[self._reply(gen) for gen in row] for row in out]

    def _reply(self, gen: Any) -> Reply:
        tok = self.generator.tokenizer
        ids = gen.token_ids
        # Decoded one by one, a token holding part of a multi-byte character becomes U+FFFD, so
        # its `bytes` are the replacement character's rather than the raw bytes.
        tokens = [tok.decode([i]) for i in ids]
        top = [[(tok.decode([i]), lp) for i, lp in step] for step in gen.top_logprobs]
        return Reply(gen.text, gen.prompt_tokens, gen.finish_reason, tokens, list(gen.token_logprobs[: len(ids)]), top)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        while self.queue is not None and not self.queue.empty():
            self.queue.get_nowait().future.cancel()
        # A running generate() cannot be interrupted; don't block stop() on it.
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---- the server ------------------------------------------------------------------------------------


class _Stats:
    """Counters read from other threads, hence the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests, self.batches, self.batched_rows = 0, 0, 0
        self.faults: dict[str, int] = {}

    def next_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def add_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def add_batch(self, rows: int) -> None:
        with self.lock:
            self.batches += 1
            self.batched_rows += rows

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "faults": dict(self.faults), "batches": self.batches,
                    "batched_rows": self.batched_rows}


class _Server:
    def __init__(self, model: str, backend: Any, plan: FaultPlan, latency_s: float, seed: int, stats: _Stats) -> None:
        self.model, self.backend, self.plan, self.latency_s, self.seed = model, backend, plan, latency_s, seed
        self.stats = stats
        self.stopping: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self.stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 2**20)  # long few-shot prompts exceed aiohttp's 1 MiB
        app.add_routes([web.get("/v1/models", self.models), web.get("/health", self.health),
                        web.post("/v1/chat/completions", self.chat), web.post("/v1/completions", self.completions)])
        self.batches = batch_server.mount(app, self)  # files + batches, run on this server's backend
        # access_log=None: no request lines at all, so no header or key can reach a log.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        # A deep backlog lets hundreds of benchmark connections open at once without SYN retries.
        site = web.TCPSite(self.runner, host, port, backlog=4096)
        await site.start()
        return self.runner.addresses[0][1]

    async def shutdown(self) -> None:
        assert self.stopping is not None and self.runner is not None
        self.stopping.set()  # wakes every latency / timeout pause
        self.backend.close()
        await self.runner.cleanup()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, but wake early when the server stops; True means it is stopping."""
        assert self.stopping is not None
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(openai_api.models_response(self.model))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._chat_body)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._completion_body)

    async def _serve(self, request: web.Request, answer: Any) -> web.StreamResponse:
        """Latency, then faults decided by request index, then the real answer."""
        fault = self.plan.decide(self.stats.next_request())
        if self.latency_s and await self._pause(self.latency_s):
            return fault_kinds.drop(request)
        if fault in ("429", "500", "timeout", "drop"):
            self.stats.add_fault(fault)
            return await self._early_fault(request, fault)
        try:
            try:
                body = json.loads(await request.read())
            except ValueError:
                raise bad("the request body is not valid JSON") from None
            check_common(body, self.model)
            result = await answer(body, truncate=fault == "truncate")
        except ApiError as err:
            return err.response()
        if fault is not None:  # counted once applied: an invalid request got its 400 instead
            self.stats.add_fault(fault)
        return fault_kinds.malformed(result) if fault == "malformed" else web.json_response(result)

    async def _early_fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "429":
            return fault_kinds.rate_limited()
        if fault == "500":
            return fault_kinds.server_error()
        if fault == "timeout":
            await self._pause(fault_kinds.TIMEOUT_S)
        return fault_kinds.drop(request)

    async def _replies(self, prompt: str, params: GenParams, truncate: bool) -> list[Reply]:
        replies = await self.backend.generate(prompt, params)
        return [fault_kinds.truncate(r) for r in replies] if truncate else replies

    async def _chat_body(self, body: dict[str, Any], truncate: bool) -> dict[str, Any]:
        messages, params, top_n = openai_api.chat_request(body, self.seed)
        replies = await self._replies(self.backend.render(messages), params, truncate)
        return openai_api.chat_response(self.model, replies, top_n, bool(body.get("logprobs")))

    async def _completion_body(self, body: dict[str, Any], truncate: bool) -> dict[str, Any]:
        if prompt_logprobs.wants_scoring(body):
            req, choices = await self.backend.score(body, self.seed)
            return prompt_logprobs.response(self.model, req, choices)
        prompts, params, top_n = openai_api.completion_request(body, self.seed)
        rows = await asyncio.gather(*(self._replies(p, params, truncate) for p in prompts))
        return openai_api.completion_response(self.model, list(rows), params.n, top_n)


# ---- lifecycle -------------------------------------------------------------------------------------


class ServerHandle:
    """A running server: `.url` is the OpenAI base URL; `.stop()` (or leaving `with`) ends it."""

    def __init__(self, server: _Server, host: str, port: int, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self._server, self._loop, self._thread = server, loop, thread
        self.port = port
        self.url = f"http://{host}:{port}/v1"
        self._stopped = False

    @property
    def stats(self) -> dict[str, Any]:
        """Counters so far: requests, faults {kind: count}, batches, batched_rows."""
        return self._server.stats.snapshot()

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_loop(loop: asyncio.AbstractEventLoop, server: _Server, host: str, port: int,
              started: threading.Event, box: dict[str, Any]) -> None:
    asyncio.set_event_loop(loop)
    try:
        box["port"] = loop.run_until_complete(server.start(host, port))
    except BaseException as exc:  # reported to start_server's thread, which raises it
        box["error"] = exc
        started.set()
        loop.close()
        return
    started.set()
    try:
        loop.run_forever()
    finally:
        loop.close()


def check_options(latency_s: float, max_batch: int, batch_wait_ms: float, port: int) -> None:
    if latency_s < 0 or max_batch < 1 or batch_wait_ms < 0 or not 0 <= port <= 65535:
        raise DistillError("serve needs --latency >= 0, --max-batch >= 1, --batch-wait-ms >= 0 and a port 0-65535")


def start_server(model: str, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                 faults: str | None = None, seed: int = 0, max_batch: int = 16,
                 batch_wait_ms: float = 5.0) -> ServerHandle:
    """Load `model` ("echo" for none), listen on host:port (0 picks a free port) and return."""
    check_options(latency_s, max_batch, batch_wait_ms, port)
    plan = parse_faults(faults, seed)  # before loading a model: a typo should fail fast
    stats = _Stats()
    backend: Any = _EchoBackend() if model == "echo" else _ModelBackend(model, max_batch, batch_wait_ms / 1000, stats)
    return launch(_Server(model, backend, plan, latency_s, seed, stats), host, port)


def launch(server: _Server, host: str, port: int) -> ServerHandle:
    """Run `server` on its own event-loop thread (also used by evals/serve_cascade.py)."""
    backend = server.backend
    loop = asyncio.new_event_loop()
    started, box = threading.Event(), {}
    thread = threading.Thread(target=_run_loop, args=(loop, server, host, port, started, box),
                              name="distill-serve", daemon=True)
    thread.start()
    started.wait()
    if "error" in box:
        backend.close()
        err = box["error"]
        if isinstance(err, OSError):
            raise DistillError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
        raise err
    return ServerHandle(server, host, box["port"], loop, thread)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a benchmark that terminates its server stops it cleanly."""
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """`distill serve`: serve until Ctrl-C; returns the exit code."""
    head, _, example = __doc__.partition("example:\n")
    parser = argparse.ArgumentParser(prog="distill serve", description=head.strip(), epilog="example:\n" + example,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="registry name, local path, or 'echo' (no model)")
    parser.add_argument("--cascade", metavar="SPEC", help="serve a calibrated cascade instead: the cascade.json "
                        "of `distill eval cascade` (evals/serve_cascade.py)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--faults", help=f"kinds {', '.join(fault_kinds.KINDS)}; e.g. {fault_kinds.EXAMPLE}")
    parser.add_argument("--seed", type=int, default=0, help="fault RNG seed and default generation seed")
    parser.add_argument("--max-batch", type=int, default=16, help="most requests per model call")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"host": args.host, "port": args.port, "latency_s": args.latency,
                               "faults": args.faults, "seed": args.seed, "max_batch": args.max_batch,
                               "batch_wait_ms": args.batch_wait_ms}
    try:
        if (args.model is None) == (args.cascade is None):
            raise DistillError("serve needs one of --model NAME or --cascade SPEC.json")
        if args.cascade:
            from evals.serve_cascade import start_cascade_server  # evals loads only for a cascade

            handle = start_cascade_server(args.cascade, **options)
        else:
            handle = start_server(args.model, **options)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.model or 'cascade ' + args.cascade} at {handle.url} (Ctrl-C stops)", flush=True)
    try:
        with _sigterm_as_interrupt():
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    print(f"stopped; {json.dumps(handle.stats)}", file=sys.stderr)
    return 0
