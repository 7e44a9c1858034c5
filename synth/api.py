"""API teachers through LiteLLM: one async call, normalised reasoning, cost and error classes.

Retries, rate limits and concurrency live in synth/api_engine.py; a call here is one HTTP
request (litellm's own retries are off). OpenAI-compatible servers ("openai/<name>" with an
`api_base`: vLLM, llama.cpp, `distill serve`) skip litellm and are posted to directly over one
shared aiohttp session; see `_direct` for why. The API key is read from the environment (or
given) and held only in a masked wrapper: it never reaches a repr, the params, the store
or an error message.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator, Sequence

# litellm fetches its price map from GitHub at import unless told otherwise; offline that
# costs retries and warnings, so the bundled copy is used.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import litellm  # noqa: E402
import openai  # noqa: E402

from distill.errors import DistillError  # noqa: E402
from synth.local import Generation  # noqa: E402

litellm.suppress_debug_info = True  # else every exception prints a "Give Feedback" banner
litellm.telemetry = False

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
_UNSET = object()


class _Secret:
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


def _status_error(status: int, body: bytes, headers: Any, secret: str | None) -> ApiError:
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


def _env_proxy(url: str) -> str | None:
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


class ApiTeacher:
    """A chat model behind an API (any litellm model string: "openai/gpt-4o-mini",
    "anthropic/claude-...", "openai/<name>" with `api_base` for vLLM / llama.cpp servers)."""

    is_chat = True

    def __init__(self, name: str, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 api_key: str | None = None, price_per_mtok: tuple[float, float] | None = None,
                 timeout_s: float = 60, extra_params: dict | None = None) -> None:
        self.name, self.model, self.api_base = name, model, api_base
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise DistillError(f"teacher {name}: environment variable {api_key_env} is not set; "
                                   f"export it with your API key")
        self._key = _Secret(api_key)
        self.price_per_mtok = price_per_mtok
        self.timeout_s = timeout_s
        self.extra_params = dict(extra_params or {})
        self._session: aiohttp.ClientSession | None = None  # shared while `session()` is open
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._session_users = 0
        self._proxy: str | None = None
        self._map_prices: Any = _UNSET  # litellm's price map, looked up once for direct calls

    def __repr__(self) -> str:
        return f"ApiTeacher(name={self.name!r}, model={self.model!r}, api_base={self.api_base!r}, key=***)"

    # ---- prompts -------------------------------------------------------------------------

    def render(self, messages_or_text: str | Sequence[dict]) -> str:
        """Canonical JSON of the messages: what the request key hashes and the store keeps."""
        messages = ([{"role": "user", "content": messages_or_text}] if isinstance(messages_or_text, str)
                    else [dict(m) for m in messages_or_text])
        return json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def messages(rendered: str) -> list[dict]:
        """The messages back from a rendered string.

        Text appended after the JSON (the CoT stage adds "Reasoning:") goes at the end of the
        last user turn, which every provider accepts; plain text is one user message.
        """
        try:
            messages, end = json.JSONDecoder().raw_decode(rendered)
        except json.JSONDecodeError:
            return [{"role": "user", "content": rendered}]
        if not isinstance(messages, list):
            return [{"role": "user", "content": rendered}]
        suffix = rendered[end:]
        if suffix.strip():
            last = messages[-1] if messages and messages[-1].get("role") == "user" else None
            if last is None:
                messages.append({"role": "user", "content": suffix.strip()})
            else:
                last["content"] = f"{last['content']}\n\n{suffix.strip()}"
        return messages

    # ---- prices --------------------------------------------------------------------------

    def price_per_token(self) -> tuple[float, float] | None:
        """(input, output) USD per token: the user's table, else litellm's map, else None."""
        if self.price_per_mtok is not None:
            return self.price_per_mtok[0] / 1e6, self.price_per_mtok[1] / 1e6
        try:
            info = litellm.get_model_info(self.model)
            inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
            return (float(inp or 0.0), float(out or 0.0)) if (inp or out) else None
        except Exception:  # unknown model: litellm raises; cost is simply unknown
            return None

    def cost(self, response: Any, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price_per_mtok is not None:
            return (prompt_tokens * self.price_per_mtok[0] + completion_tokens * self.price_per_mtok[1]) / 1e6
        hidden = getattr(response, "_hidden_params", None) or {}
        if "response_cost" in hidden:  # litellm already priced it (None: model not in its map)
            return float(hidden["response_cost"] or 0.0)
        try:
            return float(litellm.completion_cost(completion_response=response, model=self.model) or 0.0)
        except Exception:  # ModelNotMappedError for self-hosted models: unknown, so 0
            return 0.0

    # ---- generation ----------------------------------------------------------------------

    @property
    def direct(self) -> bool:
        """True when calls skip litellm: an OpenAI-compatible server ("openai/<name>" + api_base)."""
        return bool(self.api_base) and self.model.startswith("openai/") and not self.extra_params

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """One pooled HTTP session shared by the direct calls made inside (the engine opens one per run).

        Outside it a direct call opens and closes a connection of its own. Nests; closes with the
        outermost; belongs to the event loop that opened it.
        """
        if not self.direct or (self._session is not None and self._session_loop is not asyncio.get_running_loop()):
            yield
            return
        if self._session is None:
            # limit=0: no pool cap, concurrency is the engine's job (aiohttp's default caps at 100).
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
            self._session_loop = asyncio.get_running_loop()
            self._proxy = _env_proxy(self.api_base)
        self._session_users += 1
        try:
            yield
        finally:
            self._session_users -= 1
            if self._session_users == 0:
                session, self._session, self._session_loop = self._session, None, None
                await session.close()

    async def agenerate(self, messages: str | list[dict], *, max_new_tokens: int, temperature: float,
                        stop: Sequence[str] | None = None, seed: int | None = None) -> Generation:
        """One call; raises ApiError (classified, scrubbed) on any failure."""
        msgs = self.messages(messages) if isinstance(messages, str) else messages
        if self.direct:
            return await self._direct(msgs, max_new_tokens, temperature, stop, seed)
        kwargs: dict[str, Any] = dict(self.extra_params)
        kwargs.update(model=self.model, messages=msgs, max_tokens=max_new_tokens, temperature=temperature,
                      timeout=self.timeout_s, num_retries=0, max_retries=0,
                      # providers without `seed` (Anthropic) would reject the call otherwise
                      drop_params=True)
        if stop:
            kwargs["stop"] = list(stop)[:4]  # OpenAI accepts at most four stop strings
        if seed is not None:
            kwargs["seed"] = seed
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._key.get():
            kwargs["api_key"] = self._key.get()
        try:
            response = await litellm.acompletion(**kwargs)
            return self._generation(response, msgs)
        except ApiError:
            raise
        except Exception as exc:
            raise classify(exc, self._key.get()) from None

    async def _direct(self, msgs: list[dict], max_new_tokens: int, temperature: float,
                      stop: Sequence[str] | None, seed: int | None) -> Generation:
        """POST <api_base>/chat/completions ourselves, with the body litellm would send.

        Why not litellm here: it spends about 4 ms of CPU per call (building and validating its
        request and response objects, logging and cost hooks, its httpx client), so one event
        loop tops out near 250 calls/s; with 256 requests in flight at 0.5 s latency (512/s
        possible) the engine reached 42% of that through litellm and 95% this way
        (bench/RESULTS.md). This POST costs about 0.2 ms. Named providers keep litellm, whose
        request translation is the point there; so does any teacher with `extra_params`.
        """
        secret = self._key.get() or os.environ.get("OPENAI_API_KEY")  # litellm's fallback too
        body: dict[str, Any] = {"model": self.model.split("/", 1)[1], "messages": msgs,
                                "max_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            body["stop"] = list(stop)[:4]
        if seed is not None:
            body["seed"] = seed
        headers = {"Authorization": f"Bearer {secret}"} if secret else None
        shared = self._session if self._session_loop is asyncio.get_running_loop() else None
        session = shared or aiohttp.ClientSession()
        proxy = self._proxy if shared else _env_proxy(self.api_base)
        try:
            async with session.post(self.api_base.rstrip("/") + "/chat/completions", json=body, headers=headers,
                                    proxy=proxy, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise _status_error(resp.status, raw, resp.headers, secret)
            data = json.loads(raw)
        except ApiError:
            raise
        except asyncio.TimeoutError as exc:  # before the connection errors: ServerTimeoutError is both
            raise ApiError("timeout", scrub(str(exc) or "timed out", secret)) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            raise ApiError("connection", scrub(str(exc) or type(exc).__name__, secret)[:500]) from None
        except ValueError as exc:  # a 200 whose body is not JSON
            raise ApiError("malformed", scrub(str(exc), secret)[:500]) from None
        except Exception as exc:
            raise classify(exc, secret) from None
        finally:
            if shared is None:
                await session.close()
        try:
            choice = data["choices"][0]
            message, usage = choice["message"], data.get("usage") or {}
            return self._build(message.get("content"), message.get("reasoning_content") or message.get("reasoning"),
                               None, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                               choice.get("finish_reason"), msgs, None)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ApiError("malformed", f"response without choices ({type(exc).__name__})") from None

    def _generation(self, response: Any, msgs: list[dict]) -> Generation:
        try:
            choice = response.choices[0]
            message = choice.message
        except (AttributeError, IndexError, TypeError) as exc:
            raise ApiError("malformed", f"response without choices ({type(exc).__name__})") from None
        usage = getattr(response, "usage", None)
        return self._build(getattr(message, "content", None), getattr(message, "reasoning_content", None),
                           getattr(message, "thinking_blocks", None), getattr(usage, "prompt_tokens", None),
                           getattr(usage, "completion_tokens", None), choice.finish_reason, msgs, response)

    def _build(self, content: str | None, reasoning: str | None, blocks: Any, prompt_tokens: int | None,
               completion_tokens: int | None, finish_reason: str | None, msgs: list[dict],
               response: Any) -> Generation:
        """The Generation from a parsed reply; `response` is litellm's object (None for direct calls)."""
        text, reasoning = split_reasoning(content, reasoning, blocks)
        prompt_tokens = int(prompt_tokens or sum(len(str(m.get("content", ""))) for m in msgs) // 4)
        completion_tokens = int(completion_tokens or len(text + (reasoning or "")) // 4)
        finish = "length" if finish_reason in ("length", "max_tokens") else "stop"
        if response is None and self.price_per_mtok is None:  # direct call: litellm's price map, read once
            if self._map_prices is _UNSET:
                self._map_prices = self.price_per_token()
            prices = self._map_prices or (0.0, 0.0)
            cost = prompt_tokens * prices[0] + completion_tokens * prices[1]
        else:
            cost = self.cost(response, prompt_tokens, completion_tokens)
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason=finish, reasoning=reasoning, cost_usd=cost)

    # ---- the sync Teacher protocol -------------------------------------------------------

    def generate(self, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 num_samples: int = 1, stop: list[str] | None = None, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]:
        """Sync, unthrottled, no retries: for small ad-hoc use. Stages go through api_engine."""
        async def run() -> list[list[Generation]]:
            calls = [self.agenerate(p, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop,
                                    seed=seed + i) for p in prompts for i in range(num_samples)]
            async with self.session():
                flat = await asyncio.gather(*calls)
            return [list(flat[k * num_samples:(k + 1) * num_samples]) for k in range(len(prompts))]
        return asyncio.run(run())

    def score_continuations(self, prompt: str, continuations: list[str]) -> list[float]:
        raise DistillError(f"teacher {self.name} is an API model: it cannot score answer options "
                           "(no log-probs); ask for an explicit 'Answer:' line instead")
