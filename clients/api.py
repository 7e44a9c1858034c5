"""API teachers through LiteLLM: one async call, normalised reasoning, cost and error classes.

Retries, rate limits and concurrency live in engine/api_engine.py; a call here is one HTTP
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
from typing import Any, AsyncIterator, Sequence

# litellm fetches its price map from GitHub at import unless told otherwise; offline that
# costs retries and warnings, so the bundled copy is used.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from core.errors import DistillError  # noqa: E402
from clients.api_errors import ApiError, Secret, classify, env_proxy, scrub, split_reasoning, status_error  # noqa: E402
from clients.replicas import Replicas, split_bases  # noqa: E402
from clients.types import Generation  # noqa: E402

litellm.suppress_debug_info = True  # else every exception prints a "Give Feedback" banner
litellm.telemetry = False

_UNSET = object()


class ApiTeacher:
    """A chat model behind an API (any litellm model string: "openai/gpt-4o-mini",
    "anthropic/claude-...", "openai/<name>" with `api_base` for vLLM / llama.cpp servers)."""

    is_chat = True

    def __init__(self, name: str, model: str, *, api_base: str | None = None, api_key_env: str | None = None,
                 api_key: str | None = None, price_per_mtok: tuple[float, float] | None = None,
                 timeout_s: float = 60, extra_params: dict | None = None, max_per_replica: int = 0) -> None:
        self.name, self.model, self.api_base = name, model, api_base
        # Several comma-separated base URLs: replicas of one teacher, spread and health-checked;
        # max_per_replica (0: none) caps each one's calls in flight.
        bases = split_bases(api_base)
        if max_per_replica < 0 or (max_per_replica and len(bases) < 2):
            raise DistillError(f"--max-per-replica {max_per_replica}: give a positive cap and several comma-separated "
                               "--api-base URLs (one server is capped by --max-concurrency)")
        self.max_per_replica = max_per_replica
        self.replicas = Replicas(bases, max_per_replica) if len(bases) > 1 else None
        self.api_key_env = api_key_env
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise DistillError(f"teacher {name}: environment variable {api_key_env} is not set; "
                                   f"export it with your API key")
        self._key = Secret(api_key)
        self.price_per_mtok = price_per_mtok
        self.timeout_s = timeout_s
        self.extra_params = dict(extra_params or {})
        self._session: aiohttp.ClientSession | None = None  # shared while `session()` is open
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._session_users = 0
        self._proxy: str | None = None
        self._map_prices: Any = _UNSET  # litellm's price map, looked up once for direct calls

    def secret(self) -> str | None:
        """The key this teacher may send: its own (`api_key`, `api_key_env`); else OPENAI_API_KEY, but only to
        OpenAI's own endpoint. A custom `api_base` never receives an environment key the user did not name
        for it (a server on another host would otherwise collect the user's OpenAI key)."""
        return self._key.get() or (None if self.api_base else os.environ.get("OPENAI_API_KEY"))

    def key_given_as_value(self) -> str | None:
        """The key when it was passed as `api_key` rather than named by `api_key_env` (sharded runs
        must hand it to their workers another way: engine/sharded.py)."""
        return None if self.api_key_env else self._key.get()

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
            self._proxy = env_proxy(split_bases(self.api_base)[0])
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
        if self.replicas is None:
            return await self._agenerate(msgs, self.api_base, max_new_tokens, temperature, stop, seed)
        async with self.replicas.call() as replica:
            try:
                gen = await self._agenerate(msgs, replica.url, max_new_tokens, temperature, stop, seed)
            except ApiError as err:
                self.replicas.done(replica, err.kind)
                raise
            self.replicas.done(replica, None)
            return gen

    async def _agenerate(self, msgs: list[dict], base: str | None, max_new_tokens: int, temperature: float,
                         stop: Sequence[str] | None, seed: int | None) -> Generation:
        if self.direct:
            return await self._direct(msgs, base, max_new_tokens, temperature, stop, seed)
        kwargs: dict[str, Any] = dict(self.extra_params)
        kwargs.update(model=self.model, messages=msgs, max_tokens=max_new_tokens, temperature=temperature,
                      timeout=self.timeout_s, num_retries=0, max_retries=0,
                      # providers without `seed` (Anthropic) would reject the call otherwise
                      drop_params=True)
        if stop:
            kwargs["stop"] = list(stop)[:4]  # OpenAI accepts at most four stop strings
        if seed is not None:
            kwargs["seed"] = seed
        if base:
            kwargs["api_base"] = base
        # litellm falls back to OPENAI_API_KEY for any openai/ model: a custom api_base gets a placeholder instead.
        kwargs["api_key"] = self._key.get() or ("none" if self.api_base else None)
        if kwargs["api_key"] is None:
            del kwargs["api_key"]
        try:
            response = await litellm.acompletion(**kwargs)
            return self._generation(response, msgs)
        except ApiError:
            raise
        except Exception as exc:
            raise classify(exc, self.secret()) from None

    async def _direct(self, msgs: list[dict], base: str, max_new_tokens: int, temperature: float,
                      stop: Sequence[str] | None, seed: int | None) -> Generation:
        """POST <api_base>/chat/completions ourselves, with the body litellm would send.

        Why not litellm here: it spends about 4 ms of CPU per call (building and validating its
        request and response objects, logging and cost hooks, its httpx client), so one event
        loop tops out near 250 calls/s; with 256 requests in flight at 0.5 s latency (512/s
        possible) the engine reached 42% of that through litellm and 95% this way
        (bench/RESULTS.md). This POST costs about 0.2 ms. Named providers keep litellm, whose
        request translation is the point there; so does any teacher with `extra_params`.
        """
        secret = self.secret()
        body: dict[str, Any] = {"model": self.model.split("/", 1)[1], "messages": msgs,
                                "max_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            body["stop"] = list(stop)[:4]
        if seed is not None:
            body["seed"] = seed
        headers = {"Authorization": f"Bearer {secret}"} if secret else None
        shared = self._session if self._session_loop is asyncio.get_running_loop() else None
        session = shared or aiohttp.ClientSession()
        proxy = self._proxy if shared and self.replicas is None else env_proxy(base)
        try:
            async with session.post(base.rstrip("/") + "/chat/completions", json=body, headers=headers,
                                    proxy=proxy, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise status_error(resp.status, raw, resp.headers, secret)
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
