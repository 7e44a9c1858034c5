"""Test doubles: a teacher that answers from a queue, so tests run the real engine and store
without a model."""
from __future__ import annotations

from typing import Sequence

from clients.types import Generation


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
