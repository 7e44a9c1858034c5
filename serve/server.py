"""`distill serve`: an OpenAI-compatible HTTP server for a local model, with injected faults.

It stands in for a remote teacher API in tests and benchmarks: clients (the `openai` SDK,
litellm, plain HTTP) talk to it exactly as to a hosted API, while latency and failures
(429, 500, hangs, broken bodies, dropped connections) are injected on demand. Concurrent
requests are batched onto the model, which is where CPU throughput comes from.

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health, and the
Batch API (/v1/files, /v1/batches: serve/batch_server.py). /v1/completions also speaks vLLM's
`prompt_logprobs` (serve/prompt_logprobs.py): a teacher for `distill train onpolicy --teacher-url`.
Greedy answers do not depend on which requests share a batch; sampled ones (temperature > 0)
do, because the generator seeds each batch, not each row. A request without a seed uses --seed.
Unknown request fields (top_p, user, ...) are ignored, as most compatible servers do; streaming
is refused. Latency and faults apply to the two POST endpoints only. The Authorization header
is never read or logged and the access log is off.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from core.errors import DistillError
from serve import batch_server
from serve import faults as fault_kinds
from serve import openai_api, prompt_logprobs
from serve.backends import EchoBackend, ModelBackend, Stats
from serve.faults import FaultPlan, parse_faults
from serve.openai_api import HttpError, SamplingParams, Reply, bad, check_common


@dataclass
class ServeGuard:
    """Who may call the server and how much one request may ask for."""

    api_key: str | None = None  # required as "Authorization: Bearer <key>" when set
    max_body_mb: int = 16  # request bodies and uploaded batch files
    max_choices: int = 64  # prompts x n in one request

    def check(self, host: str) -> None:
        if self.max_body_mb < 1 or self.max_choices < 1:
            raise DistillError("serve needs --max-body-mb >= 1 and --max-choices >= 1")
        if self.api_key is None and not _is_loopback(host):
            raise DistillError(f"--host {host} is reachable from other machines: give it a key with "
                               "--api-key-env NAME (an environment variable holding the key), or use --host 127.0.0.1")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _choices_asked(body: dict[str, Any]) -> int:
    prompt, n = body.get("prompt"), body.get("n", 1)
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
    return prompts * (n if isinstance(n, int) and n > 0 else 1)


class Server:
    def __init__(self, model: str, backend: Any, plan: FaultPlan, latency_s: float, seed: int, stats: Stats) -> None:
        self.model, self.backend, self.plan, self.latency_s, self.seed = model, backend, plan, latency_s, seed
        self.stats = stats
        self.guard = ServeGuard()
        self.stopping: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self.stopping = asyncio.Event()
        app = web.Application(client_max_size=self.guard.max_body_mb << 20, middlewares=[self._guarded])
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

    async def pause(self, seconds: float) -> bool:
        """Sleep, but wake early when the server stops; True means it is stopping."""
        assert self.stopping is not None
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    @web.middleware
    async def _guarded(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The key, then the handler; whatever goes wrong inside is a JSON error, never a traceback."""
        if self.guard.api_key and request.path != "/health":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, f"Bearer {self.guard.api_key}".encode()):
                return HttpError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", None,
                                 "invalid_api_key").response()
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return HttpError(413, f"the request body is over {self.guard.max_body_mb} MB (distill serve "
                                  "--max-body-mb)", None, "request_too_large").response()
        except web.HTTPException:
            raise
        except RecursionError:
            return bad("the request body is nested too deeply").response()
        except Exception as err:  # a bug: one line on the server's stderr, no details to the caller
            print(f"distill serve: {request.path}: {type(err).__name__}", file=sys.stderr, flush=True)
            return HttpError(500, "internal server error").response()

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(openai_api.models_response(self.model))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.chat_body)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._completion_body)

    async def _serve(self, request: web.Request, answer: Any) -> web.StreamResponse:
        self.stats.enter()
        try:
            return await self._serve_one(request, answer)
        finally:
            self.stats.leave()

    async def _serve_one(self, request: web.Request, answer: Any) -> web.StreamResponse:
        """Latency, then faults decided by request index, then the real answer."""
        fault = self.plan.decide(self.stats.next_request())
        if self.latency_s and await self.pause(self.latency_s):
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
            if _choices_asked(body) > self.guard.max_choices:
                raise bad(f"this request asks for {_choices_asked(body)} completions (prompts x n); the server "
                          f"allows {self.guard.max_choices} (distill serve --max-choices)", "n")
            result = await answer(body, truncate=fault == "truncate")
        except HttpError as err:
            return err.response()
        self.stats.add_request_answer(_request_digest(body))
        if fault is not None:  # counted once applied: an invalid request got its 400 instead
            self.stats.add_fault(fault)
        return fault_kinds.malformed(result) if fault == "malformed" else web.json_response(result)

    async def _early_fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "429":
            return fault_kinds.rate_limited()
        if fault == "500":
            return fault_kinds.server_error()
        if fault == "timeout":
            await self.pause(fault_kinds.TIMEOUT_S)
        return fault_kinds.drop(request)

    async def _replies(self, prompt: str, params: SamplingParams, truncate: bool) -> list[Reply]:
        replies = await self.backend.generate(prompt, params)
        return [fault_kinds.truncate(r) for r in replies] if truncate else replies

    async def chat_body(self, body: dict[str, Any], truncate: bool) -> dict[str, Any]:
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

    def __init__(self, server: Server, host: str, port: int, loop: asyncio.AbstractEventLoop,
                 thread: threading.Thread) -> None:
        self._server, self._loop, self._thread = server, loop, thread
        self.port = port
        self.url = f"http://{host}:{port}/v1"
        self._stopped = False

    @property
    def stats(self) -> dict[str, Any]:
        """Counters so far: requests, faults {kind: count}, batches, batched_rows, peak_in_flight, repeated."""
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


def _run_loop(loop: asyncio.AbstractEventLoop, server: Server, host: str, port: int,
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


def _request_digest(body: dict) -> str:
    """What makes two requests the same paid call: the prompt or messages, n and the seed."""
    what = [body.get("messages") or body.get("prompt"), body.get("n"), body.get("seed")]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_options(latency_s: float, max_batch: int, batch_wait_ms: float, port: int) -> None:
    if latency_s < 0 or max_batch < 1 or batch_wait_ms < 0 or not 0 <= port <= 65535:
        raise DistillError("serve needs --latency >= 0, --max-batch >= 1, --batch-wait-ms >= 0 and a port 0-65535")


def start_server(model: str, *, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                 faults: str | None = None, seed: int = 0, max_batch: int = 16,
                 batch_wait_ms: float = 5.0, guard: ServeGuard | None = None,
                 device: str | None = None) -> ServerHandle:
    """Load `model` ("echo" for none) on `device` (None: the GPU when there is one), listen on
    host:port (0 picks a free port) and return."""
    check_options(latency_s, max_batch, batch_wait_ms, port)
    (guard := guard or ServeGuard()).check(host)
    plan = parse_faults(faults, seed)  # before loading a model: a typo should fail fast
    stats = Stats()
    backend: Any = (EchoBackend() if model == "echo"
                    else ModelBackend(model, max_batch, batch_wait_ms / 1000, stats, device))
    return launch(Server(model, backend, plan, latency_s, seed, stats), host, port, guard)


def launch(server: Server, host: str, port: int, guard: ServeGuard | None = None) -> ServerHandle:
    """Run `server` on its own event-loop thread (also used by serve/cascade.py)."""
    server.guard = guard or ServeGuard()
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
