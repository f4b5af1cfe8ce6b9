"""Circuit breaker, retry budget and backoff rules, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from services.model_gateway.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    RetryBudget,
    RetryPolicy,
    retry_after_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_after_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker("http://b", threshold=3, cool_down_s=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    with pytest.raises(CircuitOpen, match=r"circuit open for backend http://b, retry after 6\.0s"):
        breaker.before_call()

    clock.now += 6
    breaker.before_call()  # the one half-open probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()

    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


def test_released_probe_lets_the_next_call_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("b", threshold=1, cool_down_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    breaker.before_call()
    breaker.release_probe()
    breaker.before_call()
    assert breaker.state is BreakerState.HALF_OPEN


def test_retry_budget_allows_ratio_of_requests_plus_burst() -> None:
    budget = RetryBudget(ratio=0.2, burst=2)
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()
    for _ in range(10):
        budget.on_request()
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 2  # 10 requests x 20%, capped at the burst of 2
    for _ in range(4):
        budget.on_request()
    assert not budget.try_spend()  # 4 x 0.2 = 0.8 < one retry


def test_full_jitter_backoff_stays_within_the_capped_exponential() -> None:
    policy = RetryPolicy(attempts=5, base_s=0.1, max_s=0.5, retry_after_max_s=30)
    for retry, cap in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (8, 0.5)]:
        delays = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= delay <= cap for delay in delays)
        assert max(delays) > cap / 2  # jittered over the whole range, not a constant


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
