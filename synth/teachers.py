"""One Teacher protocol and a registry: `get_teacher(name)` is nearly the whole surface.

Local open-weight models are the only backend the spine needs; API teachers (litellm) and
vLLM plug in behind the same protocol. `ScriptedTeacher` is the test double: it answers
from a queue, so unit tests exercise the real engine and store without a model.
"""
from __future__ import annotations

from typing import Protocol, Sequence

from synth.local import Generation, LocalGenerator


class Teacher(Protocol):
    name: str
    is_chat: bool

    def render(self, messages_or_text: str | list[dict]) -> str: ...

    def generate(self, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 num_samples: int = 1, stop: list[str] | None = None, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]: ...

    def score_continuations(self, prompt: str, continuations: list[str]) -> list[float]: ...


_loaded: dict[tuple[str, int], LocalGenerator] = {}


def get_teacher(name: str, batch_size: int = 16, *, api_base: str | None = None,
                api_key_env: str | None = None, api_key: str | None = None,
                price_per_mtok: tuple[float, float] | None = None, **run_options: object) -> Teacher:
    """A registered model name, a local path or a cached HF id, loaded once per process.

    "api:<litellm model>" is an API teacher (any provider, or any OpenAI-compatible server via
    `api_base`, e.g. "api:openai/smollm2-135m-instruct" against `distill serve`). Its key is read
    from `api_key_env` and never stored. `run_options` (max_concurrency, rpm, tpm,
    max_budget_usd, max_retries) go to the async engine for every request of this teacher.
    """
    if name.startswith("api:"):
        from synth.api import ApiTeacher
        teacher = ApiTeacher(name, name[4:], api_base=api_base, api_key_env=api_key_env, api_key=api_key,
                             price_per_mtok=price_per_mtok)
        teacher.run_options = {k: v for k, v in run_options.items() if v is not None}
        return teacher
    key = (name, batch_size)
    if key not in _loaded:
        _loaded[key] = LocalGenerator(name, batch_size=batch_size)
    return _loaded[key]


class ScriptedTeacher:
    """Answers with queued texts (cycled), counts calls; for tests of the engine and stages."""

    def __init__(self, name: str, responses: Sequence[str], is_chat: bool = True,
                 choice_scores: dict[str, float] | None = None):
        self.name, self.is_chat = name, is_chat
        self.responses = list(responses)
        self.choice_scores = choice_scores or {}
        self.calls = 0

    def render(self, messages_or_text: str | list[dict]) -> str:
        if isinstance(messages_or_text, str):
            return messages_or_text
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages_or_text) + "\nassistant:"

    def generate(self, prompts: list[str], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 num_samples: int = 1, stop: list[str] | None = None, seed: int = 0,
                 progress: str | None = None) -> list[list[Generation]]:
        out = []
        for prompt in prompts:
            row = []
            for _ in range(num_samples):
                words = self.responses[self.calls % len(self.responses)].split(" ")
                self.calls += 1
                # One word = one token; past max_new_tokens the text is cut, like a real model.
                n = min(len(words), max_new_tokens)
                row.append(Generation(text=" ".join(words[:n]), prompt_tokens=len(prompt.split()),
                                      completion_tokens=n, token_logprobs=[-0.5] * n, top2_margins=[1.0] * n,
                                      finish_reason="length" if len(words) > max_new_tokens else "stop"))
            out.append(row)
        return out

    def score_continuations(self, prompt: str, continuations: list[str]) -> list[float]:
        return [self.choice_scores.get(c.strip(), -1.0) for c in continuations]
