"""Several replicas of one teacher (e.g. N `vllm serve` processes): spread calls, take out the sick.

An API teacher's `api_base` may list several base URLs, comma-separated. Each call goes to the
healthy replica with the fewest calls in flight, below its own concurrency cap when one is set. A
replica whose calls fail in transport (connection, timeout, 5xx) three times in a row is taken out
for a cooldown (5 s, doubling while it keeps failing, at most 5 minutes) and then tried again with
one call; a success brings it back. The engine's retries send the failed calls elsewhere.
litellm's Router does this for providers; it is not used because our direct path to
OpenAI-compatible servers skips litellm for speed (clients/api.py `_direct`).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import AsyncIterator

FAILURES_TO_EJECT = 3
COOLDOWN_S, MAX_COOLDOWN_S = 5.0, 300.0
TRANSPORT_ERRORS = ("connection", "timeout", "server_error")


def split_bases(api_base: str | None) -> list[str]:
    return [u.strip() for u in (api_base or "").split(",") if u.strip()]


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    calls: int = 0
    failures_in_a_row: int = 0
    out_until: float = 0.0
    cooldown_s: float = COOLDOWN_S

    def healthy(self, now: float) -> bool:
        return now >= self.out_until


class Replicas:
    """Picks a replica per call; `max_per_replica` (0: no cap) bounds each one's calls in flight."""

    def __init__(self, urls: list[str], max_per_replica: int = 0) -> None:
        self.replicas = [Replica(u) for u in urls]
        self.max_per_replica = max_per_replica
        self._freed: asyncio.Condition | None = None

    def _pick(self) -> Replica | None:
        now = time.monotonic()
        open_ = [r for r in self.replicas if not self.max_per_replica or r.in_flight < self.max_per_replica]
        healthy = [r for r in open_ if r.healthy(now)]
        # All out: the one whose cooldown ends first takes a probe call rather than nobody trying.
        pool = healthy or sorted(open_, key=lambda r: r.out_until)[:1]
        return min(pool, key=lambda r: (r.in_flight, r.calls)) if pool else None

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[Replica]:
        """`async with replicas.call() as r:` post to r.url; report the outcome with `done`."""
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            while (replica := self._pick()) is None:  # every replica at its cap
                await self._freed.wait()
            replica.in_flight += 1
            replica.calls += 1
        try:
            yield replica
        finally:
            async with self._freed:
                replica.in_flight -= 1
                self._freed.notify()

    def done(self, replica: Replica, error_kind: str | None) -> None:
        if error_kind not in TRANSPORT_ERRORS:  # success, or the request's own fault (400, auth)
            replica.failures_in_a_row, replica.out_until, replica.cooldown_s = 0, 0.0, COOLDOWN_S
            return
        replica.failures_in_a_row += 1
        if replica.failures_in_a_row >= FAILURES_TO_EJECT:
            replica.out_until = time.monotonic() + replica.cooldown_s
            replica.cooldown_s = min(MAX_COOLDOWN_S, replica.cooldown_s * 2)

    def stats(self) -> dict[str, dict]:
        now = time.monotonic()
        return {r.url: {"calls": r.calls, "healthy": r.healthy(now)} for r in self.replicas}
