"""What an API call can go wrong with, and the text it returns: error classes (retryable or not), the
masked key, scrubbing secrets from messages, Retry-After, the proxy for a URL, and reasoning split
from the answer. The teacher itself is clients/api.py; retries live in engine/api_engine.py.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any, Sequence

import httpx
import openai

ERROR_CLASSES = ("rate_limit", "server_error", "timeout", "connection", "malformed", "bad_request", "auth")
RETRYABLE = {"rate_limit", "server_error", "timeout", "connection", "malformed"}
# litellm reports an unparseable 200 body as a 500 InternalServerError; these phrases tell
# such bodies apart from real server errors.
_MALFORMED_HINTS = ("expecting value", "invalid response", "unterminated string", "extra data",
                    "jsondecodeerror", "not a list", "invalid control character", "expecting ',' delimiter",
                    "expecting property name", "unexpected end", "incomplete", "missing 'choices'")
_CONNECTION_HINTS = ("connection error", "connection reset", "server disconnected", "remoteprotocolerror",
                     "connection refused", "peer closed")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


class Secret:
    """Holds the key; prints as *** so it cannot leak through repr, vars() or logging."""

    __slots__ = ("_value",)

    def __init__(self, value: str | None) -> None:
        self._value = value

    def get(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "***" if self._value else "None"

    __str__ = __repr__


class ApiError(Exception):
    """One failed call, classified. `message` is already scrubbed of the key."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.retry_after, self.status = kind, message, retry_after, status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


def scrub(text: str, secret: str | None) -> str:
    """Remove the key (and a Bearer header carrying anything) from a message."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(?i)(bearer\s+)[^\s'\"]+", r"\1***", text)


def _retry_after(exc: BaseException) -> float | None:
    # litellm rebuilds e.response without the provider's headers; the real ones are kept in
    # e.litellm_response_headers (trap seen in litellm 1.106).
    for headers in (getattr(exc, "litellm_response_headers", None), getattr(exc, "headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        if (seconds := _retry_after_header(headers)) is not None:
            return seconds
    return None


def _retry_after_header(headers: Any) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), None if absent or unreadable."""
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # the HTTP-date form
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException, secret: str | None = None) -> ApiError:
    """Map a litellm/openai/httpx exception to one of ERROR_CLASSES."""
    message = scrub(str(exc) or type(exc).__name__, secret)[:500]
    lower = message.lower()
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException, asyncio.TimeoutError)):
        return ApiError("timeout", message, status=status)
    if isinstance(exc, openai.RateLimitError) or status == 429:
        return ApiError("rate_limit", message, retry_after=_retry_after(exc), status=429)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)) or status in (401, 403):
        return ApiError("auth", message, status=status)
    if isinstance(exc, (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError)):
        return ApiError("bad_request", message, status=status)
    if isinstance(exc, (json.JSONDecodeError, KeyError, IndexError, AttributeError, TypeError,
                        openai.APIResponseValidationError)) or any(h in lower for h in _MALFORMED_HINTS):
        return ApiError("malformed", message, status=status)
    if isinstance(exc, (openai.APIConnectionError, httpx.TransportError, ConnectionError)) or any(
            h in lower for h in _CONNECTION_HINTS):
        return ApiError("connection", message, status=status)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 409):
        return ApiError("bad_request", message, status=status)
    return ApiError("server_error", message, status=status)


def status_error(status: int, body: bytes, headers: Any, secret: str | None) -> ApiError:
    """A non-200 answer of an OpenAI-compatible server, classified by its status like `classify`."""
    try:
        error = json.loads(body)["error"]
        detail = error.get("message", error) if isinstance(error, dict) else error
    except Exception:  # not OpenAI's error shape: keep the start of the body
        detail = body[:300].decode("utf-8", "replace")
    message = scrub(f"HTTP {status}: {detail}", secret)[:500]
    if status == 429:
        return ApiError("rate_limit", message, retry_after=_retry_after_header(headers), status=429)
    if status in (401, 403):
        return ApiError("auth", message, status=status)
    if 400 <= status < 500 and status not in (408, 409):
        return ApiError("bad_request", message, status=status)
    return ApiError("server_error", message, status=status)


def env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY / NO_PROXY pick for `url`, as for litellm's httpx client.

    Looked up once per session: aiohttp's own trust_env=True repeats the lookup (and a ~/.netrc
    read) on a thread for every request, which more than tripled the CPU a call costs.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def split_reasoning(content: str | None, reasoning: str | None = None,
                    thinking_blocks: Sequence[Any] | None = None) -> tuple[str, str | None]:
    """(answer text, reasoning) from any of the three ways providers return thinking.

    `reasoning_content` (DeepSeek, vLLM reasoning parsers, litellm's normalisation),
    Anthropic thinking blocks, or <think>...</think> inside the content (open models served
    raw). A lone </think> means the template opened the block; an unclosed <think> means the
    output was cut inside it, so all of it is reasoning and the answer is empty.
    """
    parts = [reasoning] if reasoning else []
    for block in thinking_blocks or []:
        text = block.get("thinking") if isinstance(block, dict) else getattr(block, "thinking", None)
        if text and text not in parts:
            parts.append(text)
    text = content or ""
    parts += [m.strip() for m in _THINK.findall(text)]
    text = _THINK.sub("", text)
    if "</think>" in text:
        head, text = text.split("</think>", 1)
        parts.append(head.replace("<think>", "").strip())
    elif "<think>" in text:
        text, tail = text.split("<think>", 1)
        parts.append(tail.strip())
    parts = [p for p in parts if p]
    return text.strip(), ("\n\n".join(parts) if parts else None)
