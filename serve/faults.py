"""Fault plans for `distill serve`: which request gets which injected failure.

Two spellings, combinable with ";":

- probabilities, "429:0.1,500:0.05,timeout:0.02" — each request draws once from an RNG seeded by
  (seed, request index), so a run is reproducible for a given seed and request order and one
  request's draw does not depend on how many others were served before it;
- explicit 1-based request indices, "429@1,3;500@2" — for tests that need an exact failure.

Explicit indices win over probabilities for the same request.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from core.errors import DistillError

KINDS = ("429", "500", "timeout", "malformed", "truncate", "drop")
EXAMPLE = "429:0.1,500:0.05,timeout:0.02  or  429@1,3;500@2"


@dataclass(frozen=True)
class FaultPlan:
    """Decides the fault (or None) for the request with a given 1-based index."""

    probabilities: tuple[tuple[str, float], ...] = ()
    explicit: dict[int, str] = field(default_factory=dict)
    seed: int = 0

    def decide(self, index: int) -> str | None:
        if index in self.explicit:
            return self.explicit[index]
        if not self.probabilities:
            return None
        # Large odd multiplier: neighbouring (seed, index) pairs give unrelated streams.
        draw = random.Random(self.seed * 1_000_003 + index).random()
        edge = 0.0
        for kind, p in self.probabilities:
            edge += p
            if draw < edge:
                return kind
        return None


def _bad(spec: str, why: str) -> DistillError:
    return DistillError(f"bad --faults '{spec}': {why}; kinds are {', '.join(KINDS)}; e.g. {EXAMPLE}")


def _kind(spec: str, kind: str) -> str:
    kind = kind.strip()
    if kind not in KINDS:
        raise _bad(spec, f"unknown kind '{kind}'")
    return kind


def _parse_explicit(spec: str, group: str, explicit: dict[int, str]) -> None:
    kind, _, indices = group.partition("@")
    kind = _kind(spec, kind)
    for text in indices.split(","):
        try:
            index = int(text)
        except ValueError:
            raise _bad(spec, f"'{text.strip()}' is not a request index") from None
        if index < 1:
            raise _bad(spec, "request indices start at 1")
        if explicit.get(index, kind) != kind:
            raise _bad(spec, f"request {index} is given two faults")
        explicit[index] = kind


def _parse_probabilities(spec: str, group: str, probabilities: dict[str, float]) -> None:
    for item in group.split(","):
        kind, sep, text = item.partition(":")
        if not sep:
            raise _bad(spec, f"'{item.strip()}' needs kind:probability or kind@index")
        kind = _kind(spec, kind)
        try:
            p = float(text)
        except ValueError:
            raise _bad(spec, f"'{text.strip()}' is not a probability") from None
        if not 0.0 <= p <= 1.0:
            raise _bad(spec, f"probability {p} is outside [0, 1]")
        probabilities[kind] = probabilities.get(kind, 0.0) + p


def parse_faults(spec: str | None, seed: int = 0) -> FaultPlan:
    """Parse a fault spec (see the module docstring); None or "" means no faults."""
    probabilities: dict[str, float] = {}
    explicit: dict[int, str] = {}
    for group in (spec or "").split(";"):
        if not group.strip():
            continue
        if "@" in group:
            _parse_explicit(spec or "", group, explicit)
        else:
            _parse_probabilities(spec or "", group, probabilities)
    if sum(probabilities.values()) > 1.0 + 1e-9:
        raise _bad(spec or "", "probabilities add up to more than 1")
    return FaultPlan(tuple(probabilities.items()), explicit, seed)


# ---- injected responses --------------------------------------------------------------------------
# These mimic what a flaky remote API does, so client retry and parsing code meets every failure
# shape it will see in production: documented errors, hangs, broken bodies and cut connections.

TIMEOUT_S = 120.0  # longer than any sane client timeout; the server's stop() cuts it short


def rate_limited() -> web.Response:
    """OpenAI's 429 shape; Retry-After tells well-behaved clients how long to back off."""
    error = {"message": "Rate limit reached for requests (injected by distill serve). Please try again in 1s.",
             "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    return web.json_response({"error": error}, status=429, headers={"Retry-After": "1"})


def server_error() -> web.Response:
    error = {"message": "The server had an error while processing your request (injected by distill serve).",
             "type": "server_error", "param": None, "code": None}
    return web.json_response({"error": error}, status=500)


def malformed(body: dict[str, Any]) -> web.Response:
    """A 200 whose body is the first half of the real JSON: a cut-off stream, not valid JSON."""
    text = json.dumps(body)
    return web.Response(text=text[: len(text) // 2], content_type="application/json")


def truncate(reply: Any) -> Any:
    """The reply cut to half its text and tokens, marked finish_reason "length" like a max_tokens stop."""
    keep = len(reply.tokens) // 2
    return replace(reply, text=reply.text[: len(reply.text) // 2], finish_reason="length",
                   tokens=reply.tokens[:keep], logprobs=reply.logprobs[:keep])


def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without answering; the client sees a disconnect, not a status.

    aiohttp then fails to write the returned response to the closed transport and swallows
    that ConnectionError quietly, which is the intended outcome.
    """
    if request.transport is not None:
        request.transport.close()
    return web.Response()
