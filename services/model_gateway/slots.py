"""Per-backend concurrency across processes: ``max_concurrency`` holds for all workers together.

Each process already limits its own calls (``resilience.Limiter``); N worker processes would still allow N
times the setting. Here a Redis sorted set per backend holds one member per call in flight, scored by
when its lease expires (Redis server time, so clocks of workers do not matter). Taking a slot first drops
expired members (a worker that died frees its slots within one lease), then adds itself if fewer than the
limit remain; a held slot's lease is renewed while the call runs. When Redis fails, calls go on under the
per-process limit alone rather than stop: a Redis outage must not stop predictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_TAKE = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
"""
)
_RENEW = (
    _NOW_MS
    + """
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""
)


class BackendSlots:
    """See the module docstring. ``hold`` raises TimeoutError when no slot frees up within ``wait_s``."""

    def __init__(self, redis: Redis, *, lease_s: float = 15.0, poll_s: float = 0.02) -> None:
        self._redis = redis
        self._lease_ms = int(lease_s * 1000)
        self._poll_s = poll_s
        self._take = redis.register_script(_TAKE)
        self._renew = redis.register_script(_RENEW)

    @staticmethod
    def key(backend: str) -> str:
        return "labelloop:backend-slots:" + hashlib.sha256(backend.encode()).hexdigest()[:32]

    @contextlib.asynccontextmanager
    async def hold(self, backend: str, limit: int, wait_s: float) -> AsyncIterator[None]:
        key, holder = self.key(backend), secrets.token_hex(8)
        try:
            taken = await self._acquire(key, holder, limit, wait_s)
        except RedisError as exc:
            log.warning("backend slots unavailable, per-process limit only: %s", exc)
            yield
            return
        if not taken:
            raise TimeoutError
        renewing = asyncio.create_task(self._keep(key, holder))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await renewing
            with contextlib.suppress(RedisError):
                await self._redis.zrem(key, holder)

    async def _acquire(self, key: str, holder: str, limit: int, wait_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = self._poll_s
        while True:
            if await self._take(keys=[key], args=[limit, self._lease_ms, holder]):
                return True
            if loop.time() + delay >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    async def _keep(self, key: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            await self._renew(keys=[key], args=[self._lease_ms, holder])
