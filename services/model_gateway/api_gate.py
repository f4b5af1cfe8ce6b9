"""Whether the annotation API can take a worker's calls: the worker takes jobs only while it can.

Every job starts with a call to the API (a chunk's lease, a backend's pending events, a training job's
start). A worker that took jobs while the API was down, starting or restarting would fail each of them at
that first call, log a traceback for each, and drop them from the queue for the API's sweepers to put back
later. So the gate starts closed and closes again whenever a call to the API cannot connect; while it is
closed, the poll loop asks the API's ``/ready`` (database reachable, schema current) instead of taking
jobs. A job whose first call found the API gone goes back on the queue (``hand_back``), untouched, since
nothing reached the API; a chunk already predicted keeps reporting (``worker._post_retrying``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from arq.worker import Retry

log = logging.getLogger(__name__)

_CHECK_TIMEOUT = httpx.Timeout(5.0)
_WAIT_MAX_S = 2.0
"""The longest pause between two ``/ready`` checks while the gate is closed."""
_HAND_BACK_S = 1.0
"""How long a job handed back waits on the queue before any worker may take it again."""
_BACKOFF_MAX_S = 2.0


def backoff_s(attempt: int) -> float:
    """The pause after the ``attempt``-th failed call to the API (from 1): 0.5, 1, 2, then 2 s."""
    return min(_BACKOFF_MAX_S, 0.5 * 2.0 ** (attempt - 1))


class ApiGate:
    """One worker process's gate (``ChunkApi.gate``): open, or closed since when and why."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.closed_since: float | None = time.monotonic()
        self.reason = "not checked yet"
        self._announced = False
        self._level = logging.INFO
        """Waiting for the API at start is routine; losing it later is a warning."""

    @property
    def is_open(self) -> bool:
        return self.closed_since is None

    def close(self, reason: str) -> None:
        self.reason = reason
        if self.closed_since is None:
            self.closed_since = time.monotonic()
        self._announce()

    def wait_s(self, poll_delay_s: float) -> float:
        """The pause before the next check: a quarter of the time closed so far, within bounds."""
        closed_for = 0.0 if self.closed_since is None else time.monotonic() - self.closed_since
        return min(_WAIT_MAX_S, max(poll_delay_s, closed_for / 4))

    async def check(self, api: httpx.AsyncClient) -> bool:
        """Ask the API's ``/ready``; opens the gate when it answers 200."""
        try:
            answer = await api.get("/ready", timeout=_CHECK_TIMEOUT)
        except httpx.HTTPError as exc:
            self.close(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return False
        if answer.status_code != 200:
            self.close(f"/ready answered {answer.status_code}: {answer.text[:300]}")
            return False
        if self._announced and self.closed_since is not None:
            log.log(
                self._level,
                "annotation API at %s ready after %.1f s: taking jobs",
                self.api_url,
                time.monotonic() - self.closed_since,
            )
        self.closed_since, self.reason, self._announced = None, "", False
        self._level = logging.WARNING
        return True

    def _announce(self) -> None:
        """One line per outage, not one per check."""
        if not self._announced:
            self._announced = True
            log.log(
                self._level,
                "annotation API at %s not ready (%s): taking no jobs until it is",
                self.api_url,
                self.reason,
            )


def hand_back(ctx: dict[str, Any], exc: BaseException) -> Retry:
    """For a job whose first API call could not connect: close the gate and put the job back on the queue.

    Raise what it returns. The job was not started anywhere (no connection, so nothing was sent); arq
    keeps it, counting a try, and this worker takes no job until the API is ready again.
    """
    gate: ApiGate = ctx["api_gate"]
    gate.close(f"{type(exc).__name__}: {exc}")
    return Retry(defer=_HAND_BACK_S)
