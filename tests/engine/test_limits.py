"""Flow-control primitives, timed with a fake clock (no real waits)."""
import asyncio

import pytest

from core.errors import DistillError
from engine.limits import (AdaptiveConcurrency, Budget, CircuitBreaker, TokenBucket, estimate_cost,
                          estimate_run_cost, estimate_tokens)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_allows_a_burst_then_paces_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(60, capacity=3, clock=clock, sleep=clock.sleep)  # one a second
    assert [bucket.try_take(1) for _ in range(3)] == [0, 0, 0]
    assert bucket.try_take(1) == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.try_take(1) == pytest.approx(0.5)

    async def take_five() -> None:
        for _ in range(5):
            await bucket.take(1)
    asyncio.run(take_five())
    assert clock.now == pytest.approx(5.0)  # 0.5 already elapsed + 4.5 s for five more at 1/s


def test_token_bucket_corrects_with_real_usage_and_never_deadlocks_on_huge_takes():
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10 tokens/s, capacity 600
    assert bucket.try_take(500) == 0  # estimated 500
    bucket.adjust(-300)  # real usage was 200: refund 300
    assert bucket.tokens == pytest.approx(400)
    assert bucket.try_take(1000) > 0  # larger than capacity: wait for a full bucket ...
    clock.now += 20
    assert bucket.try_take(1000) == 0  # ... then go into debt rather than wait forever
    assert bucket.tokens == pytest.approx(-400)


def test_aimd_halves_once_per_burst_and_grows_back_after_successes():
    clock = FakeClock()
    conc = AdaptiveConcurrency(64, minimum=2, maximum=64, increase_after=3, cooldown_s=1.0, clock=clock)
    epoch = conc.epoch
    assert conc.on_rate_limit(epoch) is True and conc.limit == 32
    # The rest of the burst started before the cut: it must not cut again.
    assert not any(conc.on_rate_limit(epoch) for _ in range(20)) and conc.limit == 32
    # A new request's 429 within the cooldown is the same episode.
    assert conc.on_rate_limit(conc.epoch) is False and conc.limit == 32
    for _ in range(4):
        clock.now += 1.0
        conc.on_rate_limit(conc.epoch)
    assert conc.limit == 2 and conc.lowest == 2  # never below the minimum
    for _ in range(9):
        conc.on_success()
    assert conc.limit == 5
    for _ in range(1000):
        conc.on_success()
    assert conc.limit == 64  # never above the maximum


def test_aimd_gate_bounds_requests_in_flight():
    conc = AdaptiveConcurrency(3, maximum=3)
    peak = 0

    async def one() -> None:
        nonlocal peak
        await conc.acquire()
        peak = max(peak, conc.in_flight)
        await asyncio.sleep(0.001)
        conc.release()

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(30)))
    asyncio.run(main())
    assert peak == 3 and conc.in_flight == 0


def test_breaker_opens_only_past_min_requests_and_error_rate():
    breaker = CircuitBreaker(window=10, max_error_rate=0.5, min_requests=6)
    for _ in range(5):
        breaker.record("server_error")
    assert not breaker.is_open  # too few calls to judge
    breaker.record("timeout")
    assert breaker.is_open
    with pytest.raises(DistillError, match=r"teacher t stopped: 6 of the last 6 calls failed \(server_error 5, timeout 1\)"):
        breaker.check("t")

    healthy = CircuitBreaker(window=10, max_error_rate=0.5, min_requests=6)
    for i in range(100):
        healthy.record("server_error" if i % 3 == 0 else None)  # a third fail: keep going
    assert not healthy.is_open
    healthy.check("t")


def test_budget_refuses_the_request_that_could_overspend():
    budget = Budget(max_usd=1.0)
    assert budget.try_reserve(0.4) and budget.try_reserve(0.4)
    assert not budget.try_reserve(0.4)  # 0.8 reserved in flight + 0.4 > 1.0
    assert budget.exhausted
    budget.settle(0.4, 0.1)  # the call cost less than its worst case
    assert budget.try_reserve(0.4)  # 0.1 spent + 0.4 reserved + 0.4 <= 1.0
    assert Budget(None).try_reserve(1e9)


def test_cost_estimates():
    assert estimate_tokens("x" * 400) == 100
    per_token = (1e-6, 2e-6)
    assert estimate_cost(100, 50, per_token) == pytest.approx(2e-4)
    assert estimate_cost(100, 50, None) == 0.0
    assert estimate_run_cost(["x" * 400] * 3, 50, 2, per_token) == pytest.approx(6 * 2e-4)
