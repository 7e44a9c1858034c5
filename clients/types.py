"""Value types every client returns (light: no torch, so API-only synthesis never loads it)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Generation:
    """One sampled completion; logprob lists have one entry per kept token."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    token_logprobs: list[float] = field(default_factory=list)
    top2_margins: list[float] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    # Per generated token, the model's top-k (token id, log-prob) alternatives; filled when
    # generate(top_k=k) asks (for logit distillation and calibrated confidence signals).
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (eos or stop string) or "length" (max_new_tokens)
    reasoning: str | None = None  # thinking returned apart from the answer (API reasoning models)
    cost_usd: float = 0.0  # what the call cost (API teachers); local generation is free
