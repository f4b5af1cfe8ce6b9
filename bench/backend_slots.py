"""What a backend concurrency slot costs a worker per call (``services/model_gateway/slots.py``), in one process.

Back-to-back calls to one backend, as a bulk chunk's batches make them, each holding a slot of a
``max_concurrency`` of 4: once with every slot taken from Redis and given back per call (``reuse_s=0``, how
slots worked before a process kept them: the baseline), once as configured (kept for this process's next
call). Printed per call, for each round: this process's CPU and the Redis server's CPU (``INFO cpu``), then
the ratio of medians to the baseline. A bulk call carries a batch of tasks (100 in ``make bench-bulk``),
so a worker's cost per task is these figures divided by the batch size.

    python -m devstack.exec -- python -m bench.backend_slots [--calls 2000 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Callable

import uvloop
from redis.asyncio import Redis

from bench.harness import print_rounds
from services.model_gateway.slots import BackendSlots

LIMIT = 4
Figures = tuple[float, float]
"""µs per call: this process's CPU, the Redis server's CPU."""


async def _redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _calls(redis: Redis, slots: BackendSlots, count: int, concurrent: int) -> Figures:
    backend = f"http://bench-slots-{secrets.token_hex(4)}"

    async def back_to_back(calls: int) -> None:
        for _ in range(calls):
            async with slots.hold(backend, LIMIT, 10.0):
                await asyncio.sleep(0)

    await back_to_back(20)
    cpu, server = time.process_time(), await _redis_cpu_s(redis)
    await asyncio.gather(*(back_to_back(count // concurrent) for _ in range(concurrent)))
    figures = (
        (time.process_time() - cpu) / count * 1e6,
        (await _redis_cpu_s(redis) - server) / count * 1e6,
    )
    await slots.aclose()
    return figures


async def main_async(args: argparse.Namespace) -> None:
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    kinds: dict[str, Callable[[], BackendSlots]] = {
        "taken per call (baseline)": lambda: BackendSlots(redis, reuse_s=0.0),
        "kept for the next call": lambda: BackendSlots(redis),
    }
    try:
        for concurrent in (1, 2 * LIMIT):
            rounds: dict[str, list[Figures]] = {name: [] for name in kinds}
            for _ in range(args.rounds):
                for name, make in kinds.items():
                    rounds[name].append(await _calls(redis, make(), args.calls, concurrent))
            print(
                f"µs per call, {concurrent} calling at once, max_concurrency {LIMIT} "
                f"({args.calls} calls x {args.rounds} rounds, load {os.getloadavg()[0]:.1f})"
            )
            print_rounds(rounds, "taken per call (baseline)", ["worker CPU", "Redis CPU"])
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
