"""What answers behind `distill serve`: a local model with requests batched onto it (ModelBackend), or
an echo (no model), and the counters the server reports (Stats)."""
from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from serve import prompt_logprobs
from serve.openai_api import HttpError, SamplingParams, Reply, bad


def _split_words(text: str) -> list[str]:
    """Word "tokens" that concatenate back to `text` (spaces lead, as in BPE vocabularies)."""
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])] if text else []


class EchoBackend:
    """No model: a deterministic reply from the last user message, so benchmarks measure the client."""

    def render(self, messages: list[dict[str, str]]) -> str:
        users = [m["content"] for m in messages if m["role"] == "user"]
        return users[-1] if users else ""

    async def generate(self, prompt: str, params: SamplingParams) -> list[Reply]:
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
    params: SamplingParams
    future: asyncio.Future[list[Reply]]


# OpenAI's API allows up to 20 alternatives per token; record them all, serve what is asked.
MAX_TOP_LOGPROBS = 20


def _load_generator(model: str, batch_size: int, device: str | None = None) -> Any:
    from clients.local import LocalGenerator  # torch loads only when a real model is served

    return LocalGenerator(model, batch_size=batch_size, device=device)


class ModelBackend:
    """Batches concurrent requests onto one LocalGenerator, run on a single worker thread.

    A collector takes the first queued request, waits up to `wait_s` for up to `max_batch`
    more, groups them by SamplingParams and runs one generate() per group. The model is not
    thread-safe, so one worker thread runs calls strictly one at a time; requests arriving
    meanwhile queue up and form the next batch.
    """

    def __init__(self, model: str, max_batch: int, wait_s: float, stats: Stats, device: str | None = None) -> None:
        # device None / "auto": the GPU when there is one (clients.device.pick_device)
        self.generator = _load_generator(model, max_batch, device)
        self.max_batch, self.wait_s, self.stats = max_batch, wait_s, stats
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="distill-serve-model")
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task[None] | None = None

    def render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.generator.render(messages)
        except Exception as exc:  # e.g. a chat template that rejects this role order
            raise bad(f"cannot format these messages for the model: {exc}", "messages") from None

    async def generate(self, prompt: str, params: SamplingParams) -> list[Reply]:
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
            groups: dict[SamplingParams, list[_Job]] = defaultdict(list)
            for job in await self._collect(self.queue):
                groups[job.params].append(job)
            for params, jobs in groups.items():
                await self._run(params, jobs)

    async def _run(self, params: SamplingParams, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self._generate, [j.prompt for j in jobs], params)
        except Exception as exc:  # a model failure fails this group's requests (HTTP 500), not the server
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(HttpError(500, f"generation failed: {exc}"))
            return
        self.stats.add_batch(len(jobs))
        for job, replies in zip(jobs, out):
            if not job.future.done():
                job.future.set_result(replies)

    async def score(self, body: dict[str, Any], default_seed: int) -> tuple[Any, list[dict[str, Any]]]:
        """A vLLM scoring request (serve/prompt_logprobs.py) is a batch already (TRL sends a training
        batch at once), so it skips the collector and runs on the model thread between batches."""
        g = self.generator
        req = prompt_logprobs.parse(body, g.tokenizer, g.model.get_output_embeddings().weight.shape[0], default_seed)
        try:
            choices = await asyncio.get_running_loop().run_in_executor(
                self.executor, prompt_logprobs.score, g.model, g.tokenizer, req, self.max_batch)
        except Exception as exc:  # fails this request (HTTP 500), not the server
            raise HttpError(500, f"scoring failed: {exc}") from None
        self.stats.add_batch(len(req.sequences))
        return req, choices

    def _generate(self, prompts: list[str], params: SamplingParams) -> list[list[Reply]]:
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


class Stats:
    """Counters read from other threads, hence the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests, self.batches, self.batched_rows = 0, 0, 0
        self.faults: dict[str, int] = {}
        # Answers given per distinct request (prompt, n, seed): tests count repeated paid calls with it.
        self.answers_by_request: dict[str, int] = {}
        self.in_flight, self.peak_in_flight = 0, 0  # requests being served at once (tests check caps)

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def next_request(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    def add_fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def add_request_answer(self, digest: str) -> None:
        with self.lock:
            self.answers_by_request[digest] = self.answers_by_request.get(digest, 0) + 1

    def add_batch(self, rows: int) -> None:
        with self.lock:
            self.batches += 1
            self.batched_rows += rows

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "faults": dict(self.faults), "batches": self.batches,
                    "batched_rows": self.batched_rows, "peak_in_flight": self.peak_in_flight,
                    "repeated": sum(n - 1 for n in self.answers_by_request.values())}


