"""The OpenAI wire format for `distill serve`: request validation and response bodies.

serve/server.py owns batching, the model, injected faults and the server's lifecycle; this module
checks a request body, turns it into SamplingParams, and shapes replies into chat / completions /
models JSON (usage, logprobs and error bodies included) the way the OpenAI API does.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_TOKENS_CAP = 32_768
DEFAULT_MAX_TOKENS = 256  # hosted chat APIs default to "until the context ends"; a local model needs a bound


@dataclass
class Reply:
    """One choice; `tokens` and `logprobs` run in parallel, one entry per completion token."""

    text: str
    prompt_tokens: int
    finish_reason: str
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    # Per token, the model's most likely (token, log-prob) alternatives, best first (empty for echo).
    top: list[list[tuple[str, float]]] = field(default_factory=list)

    def alternatives(self, k: int, n: int) -> list[tuple[str, float]]:
        """The top-n alternatives at token k; the chosen token alone when none were recorded."""
        if n <= 0:
            return []
        return self.top[k][:n] if k < len(self.top) else [(self.tokens[k], self.logprobs[k])]

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class SamplingParams:
    """The knobs that change generation; requests with equal params share one model call."""

    max_tokens: int
    temperature: float
    n: int
    stop: tuple[str, ...]
    seed: int


class HttpError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> web.Response:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return web.json_response({"error": error}, status=self.status)


# ---- request validation ----------------------------------------------------------------------------


def bad(message: str, param: str | None = None) -> HttpError:
    return HttpError(400, message, param)


def _int(body: dict[str, Any], name: str, lo: int, hi: int, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"'{name}' must be an integer from {lo} to {hi}, got {value!r}", name)
    return value


def _params(body: dict[str, Any], default_seed: int) -> SamplingParams:
    max_tokens = _int(body, "max_completion_tokens", 1, MAX_TOKENS_CAP, None)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, MAX_TOKENS_CAP, DEFAULT_MAX_TOKENS)
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0  # OpenAI's default
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise bad(f"'temperature' must be a number from 0 to 2, got {temperature!r}", "temperature")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("'stop' must be a string or a list of strings", "stop")
    seed = _int(body, "seed", -(2**63), 2**63 - 1, default_seed)
    n = _int(body, "n", 1, 128, 1)
    return SamplingParams(max_tokens, float(temperature), n, tuple(s for s in stops if s), seed)  # type: ignore[arg-type]


def _content(message: Any, i: int) -> dict[str, str]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text can reach a text-only model
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise bad(f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
        content = "".join(str(p.get("text", "")) for p in content)
    if content is not None and not isinstance(content, str):
        raise bad(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")
    return {"role": message["role"], "content": content or ""}


def check_common(body: Any, served: str) -> None:
    """Checks shared by both POST endpoints: a JSON object, no streaming, the served model."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    if body.get("stream"):
        raise bad("stream=true is not supported by distill serve", "stream")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("'model' is required", "model")
    if model != served:
        raise HttpError(404, f"The model '{model}' does not exist; this server serves '{served}'", "model",
                       "model_not_found")


def chat_request(body: dict[str, Any], default_seed: int) -> tuple[list[dict[str, str]], SamplingParams, int]:
    """A chat body's messages, generation params and top_logprobs, or the 400 it deserves."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list", "messages")
    messages = [_content(m, i) for i, m in enumerate(messages)]
    params = _params(body, default_seed)
    top_n = _int(body, "top_logprobs", 0, 20, 0)
    if top_n and not body.get("logprobs"):
        raise bad("'top_logprobs' requires 'logprobs' to be true", "top_logprobs")
    return messages, params, top_n  # type: ignore[return-value]


def completion_request(body: dict[str, Any], default_seed: int) -> tuple[list[str], SamplingParams, int | None]:
    """A completions body's prompts, generation params and logprobs count (None: no logprobs)."""
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise bad("'prompt' must be a string or a non-empty list of strings", "prompt")
    params = _params(body, default_seed)
    top_n = _int(body, "logprobs", 0, 5, None)
    return prompts, params, top_n


# ---- responses -------------------------------------------------------------------------------------


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def _chat_logprobs(reply: Reply, top_n: int) -> dict[str, Any]:
    content = [
        {**_token_entry(t, lp), "top_logprobs": [_token_entry(*a) for a in reply.alternatives(k, top_n)]}
        for k, (t, lp) in enumerate(zip(reply.tokens, reply.logprobs))
    ]
    return {"content": content, "refusal": None}


def _completion_logprobs(reply: Reply, top_n: int) -> dict[str, Any]:
    offsets, pos = [], 0
    for t in reply.tokens:
        offsets.append(pos)
        pos += len(t)
    top = [dict(reply.alternatives(k, top_n)) for k in range(len(reply.tokens))] if top_n else None
    return {"tokens": reply.tokens, "token_logprobs": reply.logprobs, "top_logprobs": top, "text_offset": offsets}


def _usage(prompt_tokens: int, replies: list[Reply]) -> dict[str, int]:
    completion = sum(r.completion_tokens for r in replies)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def models_response(model: str) -> dict[str, Any]:
    card = {"id": model, "object": "model", "created": 0, "owned_by": "distill"}
    return {"object": "list", "data": [card]}


def chat_response(model: str, replies: list[Reply], top_n: int, logprobs: bool) -> dict[str, Any]:
    choices = [
        {"index": i, "message": {"role": "assistant", "content": r.text, "refusal": None},
         "finish_reason": r.finish_reason, "logprobs": _chat_logprobs(r, top_n) if logprobs else None}
        for i, r in enumerate(replies)
    ]
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": _usage(replies[0].prompt_tokens, replies)}


def completion_response(model: str, rows: list[list[Reply]], n: int, top_n: int | None) -> dict[str, Any]:
    """`rows` holds each prompt's `n` replies, in prompt order."""
    choices = [
        {"index": i * n + j, "text": r.text, "finish_reason": r.finish_reason,
         "logprobs": _completion_logprobs(r, top_n) if top_n is not None else None}
        for i, row in enumerate(rows) for j, r in enumerate(row)
    ]
    replies = [r for row in rows for r in row]
    prompt_tokens = sum(row[0].prompt_tokens for row in rows)
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "usage": _usage(prompt_tokens, replies)}
