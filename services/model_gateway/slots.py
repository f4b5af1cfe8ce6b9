"""Per-backend concurrency across processes: ``max_concurrency`` holds for all workers together.

Each process already limits its own calls (``resilience.Limiter``); N worker processes would still allow N
times the setting. Here a Redis sorted set per backend holds one member per slot taken, scored by when its
lease expires (Redis server time, so clocks of workers do not matter). Taking a slot first drops expired
members (a worker that died frees its slots within one lease), then adds itself if fewer than the limit
remain; a slot's lease is renewed while this process holds it. When Redis fails, calls go on under the
per-process limit alone rather than stop: a Redis outage must not stop predictions.

A process keeps a slot for its own next call: a finished call hands its slot straight to a call of this
process waiting for one, or keeps it ``keep_s`` for the next. A bulk chunk makes one call per batch of
tasks, back to back, and taking and giving back each cost a Redis round trip per call (~15% of a
worker's CPU, bench/README.md); kept, a slot is taken once per ``reuse_s`` at most. It then goes back to
Redis, so other processes get their turn, and a changed ``max_concurrency`` applies within that time.
Calls that wait queue in their process, first come first served, behind one poller per backend that asks
Redis every ``poll_s`` to ``poll_max_s``: not one poll per waiting call. Each Redis round trip costs a worker
about as much CPU as validating a hundred predictions, so they are batched: one poll takes a slot for every
waiting call that fits under the limit (a chunk's batches start together), one renewal per backend covers
every slot the process holds, and slots going back in the same instant go in one command (kept slots go
back on a ``keep_s`` grid, so those of one burst of calls go together).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# ARGV: the limit, the lease (ms), then one new member per slot wanted; the first N of them get a slot.
_TAKE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local taken = 0
while taken < free and taken + 3 <= #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[taken + 3])
  taken = taken + 1
end
if taken > 0 then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
end
return taken
"""
)
# ARGV: the lease (ms), then the members to renew (those still in the set).
_RENEW = (
    _NOW_MS
    + """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""
)


@dataclass(eq=False)
class _Slot:
    """A member of a backend's set that this process holds, in use or kept for its next call."""

    key: str
    holder: str
    taken_at: float
    giving_back: asyncio.TimerHandle | None = field(default=None)


class BackendSlots:
    """See the module docstring. ``hold`` raises TimeoutError when no slot frees up within ``wait_s``."""

    def __init__(
        self,
        redis: Redis,
        *,
        lease_s: float = 15.0,
        poll_s: float = 0.01,
        poll_max_s: float = 0.05,
        keep_s: float = 0.005,
        reuse_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._lease_ms = int(lease_s * 1000)
        self._poll_s = poll_s
        self._poll_max_s = poll_max_s
        self._keep_s = keep_s
        self._reuse_s = reuse_s
        self._take_script = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)
        self._kept: dict[str, list[_Slot]] = {}
        self._waiting: dict[str, deque[asyncio.Future[_Slot]]] = {}
        self._limits: dict[str, int] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, set[str]] = {}
        """Members this process holds per backend, in use or kept: what its renewer renews."""
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._returning: dict[str, list[str]] = {}
        """Members to give back per backend, sent together by one task (``_give_back_later``)."""
        self._giving_back: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(backend: str) -> str:
        return "labelloop:backend-slots:" + hashlib.sha256(backend.encode()).hexdigest()[:32]

    @contextlib.asynccontextmanager
    async def hold(self, backend: str, limit: int, wait_s: float) -> AsyncIterator[None]:
        try:
            slot = await self._acquire(self.key(backend), limit, wait_s)
        except RedisError as exc:
            log.warning("backend slots unavailable, per-process limit only: %s", exc)
            yield
            return
        if slot is None:
            raise TimeoutError
        try:
            yield
        finally:
            self._put_back(slot)

    def waiting(self, backend: str) -> int:
        """Calls of this process waiting for a slot of the backend."""
        return len(self._waiting.get(self.key(backend), ()))

    async def aclose(self) -> None:
        """Give back the slots kept for calls that will not come, so other processes need not wait a lease."""
        for poller in list(self._pollers.values()):
            poller.cancel()
        kept = [slot for slots in self._kept.values() for slot in slots]
        self._kept.clear()
        for slot in kept:
            if slot.giving_back is not None:
                slot.giving_back.cancel()
            self._give_back_later(slot)
        if self._giving_back:
            await asyncio.gather(*self._giving_back, return_exceptions=True)
        for renewer in list(self._renewers.values()):
            renewer.cancel()

    async def _acquire(self, key: str, limit: int, wait_s: float) -> _Slot | None:
        """A kept slot, one taken from Redis, or one handed over within ``wait_s``; None when none came."""
        kept = self._reuse(key)
        if kept is not None:
            return kept
        queue = self._waiting.setdefault(key, deque())
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self._limits[key] = limit
        if key not in self._pollers:
            self._pollers[key] = asyncio.create_task(self._poll(key))
        try:
            await asyncio.wait({waiter}, timeout=wait_s)
        except BaseException:
            self._forget(queue, waiter)
            raise
        if waiter.done():
            return waiter.result()
        self._forget(queue, waiter)
        return None

    def _forget(self, queue: deque[asyncio.Future[_Slot]], waiter: asyncio.Future[_Slot]) -> None:
        """A waiter whose call stopped waiting; a slot handed to it meanwhile goes to the next one."""
        if not waiter.done():
            waiter.cancel()
            queue.remove(waiter)
        elif waiter.exception() is None:
            self._put_back(waiter.result())

    async def _take(self, key: str, limit: int, count: int) -> list[_Slot]:
        """Up to ``count`` slots from Redis, in one round trip: as many as the limit leaves free."""
        holders = [secrets.token_hex(8) for _ in range(count)]
        taken = int(await self._take_script(keys=[key], args=[limit, self._lease_ms, *holders]))
        if not taken:
            return []
        self._held.setdefault(key, set()).update(holders[:taken])
        renewer = self._renewers.get(key)
        if renewer is None or renewer.done():
            self._renewers[key] = asyncio.create_task(self._keep_renewed(key))
        now = asyncio.get_running_loop().time()
        return [_Slot(key, holder, now) for holder in holders[:taken]]

    async def _poll(self, key: str) -> None:
        """Take slots from Redis for this process's waiting calls, first come first served, while any wait.

        One poller per backend and process, however many calls wait: each poll asks Redis for a slot per
        waiting call in one round trip, every ``poll_s`` to ``poll_max_s`` (backing off) while none is
        free; slots this process gives back go to its waiting calls directly (``_put_back``).
        """
        queue = self._waiting[key]
        delay = self._poll_s
        try:
            while queue:
                wanted = min(len(queue), self._limits[key])
                try:
                    taken = await self._take(key, self._limits[key], wanted)
                except RedisError as exc:
                    while queue:
                        queue.popleft().set_exception(exc)
                    return
                for slot in taken:
                    if not self._hand_over(slot):
                        self._put_back(slot)  # its call stopped waiting meanwhile
                if len(taken) == wanted:
                    delay = self._poll_s
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self._poll_max_s)
        finally:
            del self._pollers[key]

    def _reuse(self, key: str) -> _Slot | None:
        """The slot this process kept most recently for the backend, if it may still be reused."""
        kept = self._kept.get(key)
        while kept:
            slot = kept.pop()
            if slot.giving_back is not None:
                slot.giving_back.cancel()
                slot.giving_back = None
            if asyncio.get_running_loop().time() - slot.taken_at < self._reuse_s:
                return slot
            self._give_back_later(slot)
        return None

    def _put_back(self, slot: _Slot) -> None:
        """After a call: hand the slot to a waiting call, keep it for the next, or give it back to Redis."""
        loop = asyncio.get_running_loop()
        if loop.time() - slot.taken_at >= self._reuse_s:
            self._give_back_later(slot)
            return
        if not self._hand_over(slot):
            # On a grid of keep_s: slots kept in one burst of calls go back at the same instant, together.
            due = (math.floor(loop.time() / self._keep_s) + 2) * self._keep_s if self._keep_s > 0 else 0.0
            slot.giving_back = loop.call_at(due, self._unkeep, slot)
            self._kept.setdefault(slot.key, []).append(slot)

    def _hand_over(self, slot: _Slot) -> bool:
        """To the call of this process that has waited longest, if any."""
        waiting = self._waiting.get(slot.key)
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return True
        return False

    def _unkeep(self, slot: _Slot) -> None:
        """No call of this process took the kept slot within ``keep_s``: it goes back to Redis."""
        kept = self._kept.get(slot.key, [])
        if slot in kept:
            kept.remove(slot)
            self._give_back_later(slot)

    def _give_back_later(self, slot: _Slot) -> None:
        """Give the slot back to Redis with the others given back in this instant: one command for all."""
        held = self._held.get(slot.key)
        if held is not None:
            held.discard(slot.holder)
        returning = self._returning.setdefault(slot.key, [])
        returning.append(slot.holder)
        if len(returning) == 1:
            task = asyncio.get_running_loop().create_task(self._give_back(slot.key))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def _give_back(self, key: str) -> None:
        holders = self._returning.pop(key)
        with contextlib.suppress(RedisError):
            await self._redis.zrem(key, *holders)

    async def _keep_renewed(self, key: str) -> None:
        """Renew every slot this process holds of the backend, one round trip per ``lease_s / 3``."""
        while self._held.get(key):
            await asyncio.sleep(self._lease_ms / 3000)
            held = self._held.get(key)
            if not held:
                return
            try:
                await self._renew(keys=[key], args=[self._lease_ms, *held])
            except RedisError as exc:
                log.warning(
                    "backend slots not renewed (%s); trying again in %.1f s", exc, self._lease_ms / 3000
                )
