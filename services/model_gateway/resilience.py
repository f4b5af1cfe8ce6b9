"""Retry policy, retry budget and circuit breaker: how the gateway stays polite to a failing backend.

Everything here is per backend and per process, shared by every job and request the process serves,
so one struggling backend is protected from the sum of all callers, not just from each one. There is
exactly one retry loop (``RetryPolicy`` used by ``backend_client``); the bisecting of failed batches in
``predictor`` sends different requests and never retries.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: ``uniform(0, min(max_s, base_s * 2**retry))``.

    Full jitter spreads the retries of many callers that failed together, instead of having them all
    come back at the same instant.
    """

    attempts: int
    base_s: float
    max_s: float
    retry_after_max_s: float

    def backoff(self, retry: int) -> float:
        """Sleep before retry number ``retry`` (0 for the first retry)."""
        return random.uniform(0.0, min(self.max_s, self.base_s * (2**retry)))


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryBudget:
    """A token bucket that caps retries at ``ratio`` of first attempts (plus a small ``burst``).

    Per-call attempt limits alone let retries multiply load exactly when a backend is overloaded; the
    budget makes the extra load bounded (20% by default) whatever the number of callers.
    """

    def __init__(self, ratio: float, burst: float) -> None:
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst

    @property
    def tokens(self) -> float:
        return self._tokens

    def on_request(self) -> None:
        """A first attempt earns ``ratio`` of a retry."""
        self._tokens = min(self.burst, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take one retry's worth of tokens; False means the caller must not retry."""
        if self._tokens < 1.0 - 1e-9:  # sums of 0.2 land just below whole numbers
            return False
        self._tokens -= 1.0
        return True


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """Raised instead of calling a backend whose breaker is open."""

    def __init__(self, backend: str, retry_after_s: float) -> None:
        self.backend = backend
        self.retry_after_s = retry_after_s
        super().__init__(f"circuit open for backend {backend}, retry after {retry_after_s:.1f}s")


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → one half-open probe after ``cool_down_s``.

    While open, calls fail at once (no connection, no timeout to wait out). In half-open state exactly
    one call goes through; its success closes the breaker, its failure opens it for another cool-down.
    """

    def __init__(self, name: str, threshold: int, cool_down_s: float, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.threshold = threshold
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        return self._state

    def before_call(self) -> None:
        """Let a call through or raise CircuitOpen; call exactly once per attempt."""
        if self._state is BreakerState.CLOSED:
            return
        remaining = self._opened_at + self.cool_down_s - self._clock()
        if self._state is BreakerState.OPEN and remaining <= 0:
            self._state = BreakerState.HALF_OPEN
            self._probing = False
        if self._state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return
        raise CircuitOpen(self.name, max(remaining, 0.0))

    def record_success(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._probing = False

    def release_probe(self) -> None:
        """The half-open probe ended without telling us anything (e.g. cancelled): allow another."""
        self._probing = False


class Limiter:
    """Per-backend concurrency limit shared by every caller in the process.

    The limit follows the backend's ``max_concurrency``; when it changes, calls that already hold a
    slot finish on the old limiter while new calls use the new one.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)

    def resized(self, limit: int) -> Limiter:
        return self if limit == self.limit else Limiter(limit)
