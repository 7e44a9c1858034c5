"""Flow control for paid API teachers: rate buckets, adaptive concurrency, breaker, budget.

Every class takes its clock (and the buckets their sleep) as arguments, so the timing logic
is unit-tested with a fake clock instead of real waits. None of them knows about HTTP: the
engine feeds them outcomes and asks them for permission.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Awaitable, Callable

from core.errors import DistillError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """`rate_per_min` units refill continuously up to `capacity` (default: one minute's worth).

    Used twice: requests/min (one unit per call) and tokens/min (estimated input + output
    before the call, corrected with real usage after). A take larger than the capacity is
    allowed once the bucket is full, leaving it in debt, so one huge prompt cannot deadlock.
    """

    def __init__(self, rate_per_min: float, capacity: float | None = None, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        if rate_per_min <= 0:
            raise DistillError(f"rate limit must be positive, got {rate_per_min}")
        self.rate_per_s = rate_per_min / 60.0
        self.capacity = float(capacity if capacity is not None else rate_per_min)
        self.tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    def try_take(self, n: float) -> float:
        """Take `n` now and return 0, or take nothing and return the seconds to wait first."""
        self._refill()
        need = min(n, self.capacity)
        if self.tokens >= need:
            self.tokens -= n
            return 0.0
        return (need - self.tokens) / self.rate_per_s

    async def take(self, n: float = 1.0) -> None:
        while (wait := self.try_take(n)) > 0:
            await self._sleep(wait)

    def adjust(self, delta: float) -> None:
        """Charge `delta` more (or refund if negative) once the real usage is known."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens - delta)


class AdaptiveConcurrency:
    """AIMD on the number of requests in flight: halve on 429, +1 after N straight successes.

    A burst of 429s is one signal, not many: each cut starts a new epoch, and only a 429
    from a request that began in the current epoch, at least `cooldown_s` after the last
    cut, cuts again. Without that, 64 simultaneous 429s drive the limit to 1, and so does a
    steady trickle of load-independent 429s (measured: a 5% 429 rate held the limit at 1,
    22 req/s instead of hundreds).

    `increase_after` defaults to 2: in a simulation at 0.5 s latency, a random 10% 429 rate
    held the limit near 60 of 64 with N=2 but near 4 with N=5 and 2 with N=10, while against a
    hard 40 req/s cap N=2 still settled near 29 (20 needed) at full throughput.
    """

    def __init__(self, start: int, minimum: int = 1, maximum: int | None = None,
                 increase_after: int = 2, cooldown_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        self.minimum = max(1, minimum)
        self.maximum = max(self.minimum, maximum if maximum is not None else start)
        self.limit = min(self.maximum, max(self.minimum, start))
        self.increase_after = increase_after
        self.in_flight = 0
        self.epoch = 0
        self.lowest = self.limit
        self.cooldown_s, self._clock = cooldown_s, clock
        self._last_cut = -float("inf")
        self._streak = 0
        self._waiters: deque[asyncio.Future] = deque()

    def on_success(self) -> None:
        self._streak += 1
        if self._streak >= self.increase_after and self.limit < self.maximum:
            self.limit += 1
            self._streak = 0
            self._wake()

    def on_rate_limit(self, started_epoch: int | None = None) -> bool:
        """Record a 429; returns True when it cut the limit."""
        self._streak = 0
        if started_epoch is not None and started_epoch < self.epoch:
            return False
        if self._clock() - self._last_cut < self.cooldown_s:
            return False
        self._last_cut = self._clock()
        self.limit = max(self.minimum, self.limit // 2)
        self.lowest = min(self.lowest, self.limit)
        self.epoch += 1
        return True

    async def acquire(self) -> int:
        """Wait for a free slot; returns the epoch the request starts in."""
        while self.in_flight >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                self._wake()  # pass on a wake-up this waiter may have consumed
                raise
        self.in_flight += 1
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1


class CircuitBreaker:
    """Opens when more than `max_error_rate` of the last `window` outcomes failed.

    Rate limits are not fed in (they are flow control, AIMD's job); server errors, timeouts,
    dropped connections, malformed bodies and rejected requests are. Once open it stays open:
    a teacher failing half its calls is misconfigured or down, and retrying a million prompts
    against it only burns time (and, for some providers, money).
    """

    def __init__(self, window: int = 50, max_error_rate: float = 0.5, min_requests: int = 20) -> None:
        self.window, self.max_error_rate, self.min_requests = window, max_error_rate, min_requests
        self._outcomes: deque[str | None] = deque(maxlen=window)
        self.is_open = False

    def record(self, error_class: str | None) -> None:
        """None for a success, else the error class of a failed attempt."""
        self._outcomes.append(error_class)
        errors = sum(1 for o in self._outcomes if o is not None)
        if len(self._outcomes) >= self.min_requests and errors / len(self._outcomes) > self.max_error_rate:
            self.is_open = True

    def summary(self) -> str:
        counts = Counter(o for o in self._outcomes if o is not None)
        errors = sum(counts.values())
        detail = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        return f"{errors} of the last {len(self._outcomes)} calls failed ({detail})"

    def check(self, teacher: str) -> None:
        if self.is_open:
            raise DistillError(
                f"teacher {teacher} stopped: {self.summary()}; check its API base, key and model, "
                "then re-run (finished requests are kept, failed ones are retried)")


def estimate_tokens(text: str) -> int:
    """A provider-neutral guess (about four characters a token), corrected after the call."""
    return max(1, len(text) // 4)


def estimate_cost(prompt_tokens: int, completion_tokens: int,
                  price_per_token: tuple[float, float] | None) -> float:
    if price_per_token is None:
        return 0.0
    return prompt_tokens * price_per_token[0] + completion_tokens * price_per_token[1]


def estimate_run_cost(texts: list[str], max_new_tokens: int, num_samples: int,
                      price_per_token: tuple[float, float] | None) -> float:
    """Upper bound for a run before it starts: every sample writes max_new_tokens."""
    return sum(estimate_cost(estimate_tokens(t), max_new_tokens, price_per_token) for t in texts) * num_samples


class Budget:
    """Refuses to start a request whose worst-case cost could overspend `max_usd`.

    A request reserves its estimate (input guess + max_new_tokens of output) before it is
    sent and settles at its real cost after, so the requests in flight together can never
    push the spend past the cap.
    """

    def __init__(self, max_usd: float | None, spent_usd: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.already = spent_usd  # spent by earlier runs; reported, not charged to this cap
        self.refused = 0

    def try_reserve(self, estimate_usd: float) -> bool:
        if self.max_usd is not None and self.spent + self.reserved + estimate_usd > self.max_usd:
            self.refused += 1
            return False
        self.reserved += estimate_usd
        return True

    def settle(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved = max(0.0, self.reserved - reserved_usd)
        self.spent += actual_usd

    @property
    def exhausted(self) -> bool:
        return self.refused > 0
