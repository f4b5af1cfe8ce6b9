"""What checking a pooled connection costs each request: SQLAlchemy's ``pool_pre_ping`` against the users'
pool's own check (``db._check_on_checkout``), in one process, alternated.

Each "request" is what a small API read does with the database: check a connection out, ``BEGIN``, one
statement, ``COMMIT``, return it. Printed per request: the client's CPU, the CPU of the Postgres server
process serving the connection, and the wall time, for each round, then the ratio of medians to
``pool_pre_ping``.

    python -m devstack.exec -- python -m bench.pool_checkout [--requests 2000 --rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.harness import bench_database, cpu_seconds_of_tree, print_rounds
from services.annotation_api.db import PLAN_EACH_EXECUTION, make_engine, raw_connection
from shared.settings import asyncpg_url

Figures = tuple[float, float, float]
"""µs per request: client CPU, Postgres CPU, wall."""


async def _requests(engine: AsyncEngine, count: int) -> Figures:
    async with engine.begin() as conn:
        pid = (await raw_connection(conn)).get_server_pid()
    cpu, server, wall = time.process_time(), cpu_seconds_of_tree(pid), time.perf_counter()
    for _ in range(count):
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
    return (
        (time.process_time() - cpu) / count * 1e6,
        (cpu_seconds_of_tree(pid) - server) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )


async def main_async(args: argparse.Namespace) -> None:
    async with bench_database("bench_pool_checkout") as url:
        engines = {
            "pool_pre_ping (baseline)": create_async_engine(
                asyncpg_url(url),
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"server_settings": PLAN_EACH_EXECUTION},
            ),
            "check, used moments ago": make_engine(url, 1, 0, ping_after_idle_s=60.0),
            "check, pinging every time": make_engine(url, 1, 0, ping_after_idle_s=0.0),
        }
        try:
            for engine in engines.values():
                await _requests(engine, 200)
            rounds: dict[str, list[Figures]] = {name: [] for name in engines}
            for _ in range(args.rounds):
                for name, engine in engines.items():
                    rounds[name].append(await _requests(engine, args.requests))
        finally:
            for engine in engines.values():
                await engine.dispose()
    print(f"µs per request ({args.requests} requests x {args.rounds} rounds, load {os.getloadavg()[0]:.1f})")
    print_rounds(rounds, "pool_pre_ping (baseline)", ["client CPU", "Postgres CPU", "wall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
