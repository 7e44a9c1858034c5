"""One Teacher protocol and a registry: `get_teacher(name)` is nearly the whole surface.

Local open-weight models (clients.local) and API teachers (clients.api: litellm, any provider or
OpenAI-compatible server such as vLLM) sit behind the same protocol. Both load lazily, so code
that only names a Teacher never imports torch. The test double lives in tests/doubles.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from core.errors import DistillError
from clients.device import pick_device
from clients.types import Generation

if TYPE_CHECKING:
    from clients.local import LocalGenerator


class Teacher(Protocol):
    name: str
    is_chat: bool

    def render(self, messages_or_text: str | list[dict]) -> str: ...

    def generate(self, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 num_samples: int = 1, stop: list[str] | None = None, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]: ...

    def score_continuations(self, prompt: str, continuations: list[str]) -> list[float]: ...


_loaded: dict[tuple[str, int, str], "LocalGenerator"] = {}


def get_teacher(name: str, batch_size: int = 16, *, device: str | None = None, api_base: str | None = None,
                api_key_env: str | None = None, api_key: str | None = None,
                price_per_mtok: tuple[float, float] | None = None, max_per_replica: int = 0,
                **run_options: object) -> Teacher:
    """A registered model name, a local path or a cached HF id, loaded once per process.

    A local model runs on `device`: None or "auto" is the GPU when torch sees one, else the CPU
    (DISTILL_DEVICE overrides auto; see clients.device.pick_device); API teachers ignore it.

    "api:<litellm model>" is an API teacher (any provider, or any OpenAI-compatible server via
    `api_base`, e.g. "api:openai/smollm2-135m-instruct" against `distill serve`; several comma-separated
    URLs are replicas, each capped at `max_per_replica` calls in flight when given). Its key is read
    from `api_key_env` and never stored. `run_options` (max_concurrency, rpm, tpm,
    max_budget_usd, max_retries, backoff_base_s, workers, executor) go to the async engine for every request of this teacher.
    """
    if name.startswith("api:"):
        from clients.api import ApiTeacher
        teacher = ApiTeacher(name, name[4:], api_base=api_base, api_key_env=api_key_env, api_key=api_key,
                             price_per_mtok=price_per_mtok, max_per_replica=max_per_replica)
        teacher.run_options = {k: v for k, v in run_options.items() if v is not None}
        return teacher
    if run_options.get("workers") or run_options.get("executor"):
        raise DistillError(f"--workers / --executor shard API teachers only; {name} runs in this process: "
                           "drop them or use --teacher api:<model>")
    from clients.local import LocalGenerator  # torch loads here, for local teachers only

    key = (name, batch_size, pick_device(device))  # keyed by the resolved device: auto and cuda are one model
    if key not in _loaded:
        _loaded[key] = LocalGenerator(name, batch_size=batch_size, device=key[2])
    return _loaded[key]
