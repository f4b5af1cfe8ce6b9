"""What handing a chunk's predictions to Postgres costs: asyncpg arrays against one text per column.

A chunk report's insert takes a thousand task ids, results and scores. Sent as ``bigint[]``, ``text[]`` and
``float8[]`` parameters, asyncpg encodes them element by element; sent as one text each
(``jobs.repository.number_list``, ``RESULT_SEPARATOR``), orjson and ``str.join`` write them and Postgres
splits them. Each call here reads the parameters the way the insert does (each result parsed as ``jsonb``)
without writing a row. Printed per call: the client's CPU (the parameters built and sent), the CPU of the
Postgres server process, and the wall time, for each round, then the ratio of medians to the arrays.

    python -m devstack.exec -- python -m bench.chunk_params [--predictions 1000 --calls 300 --rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson

from bench.harness import bench_database, cpu_seconds_of_tree, make_texts, print_rounds
from services.annotation_api.jobs.repository import number_list
from services.annotation_api.jobs.schemas import RESULT_SEPARATOR
from shared.settings import plain_postgres_url
from tests.fakes.fake_backend import default_predict

Figures = tuple[float, float, float]
"""µs per call: client CPU, Postgres CPU, wall."""

_AS_ARRAYS = """
    SELECT count(*) FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS v(task_id, result, score)
    WHERE v.result::jsonb IS NOT NULL AND v.score IS DISTINCT FROM -1
"""
_AS_TEXTS = f"""
    SELECT count(*) FROM ROWS FROM (
        unnest(string_to_array($1, ',')),
        unnest(string_to_array($2, chr({ord(RESULT_SEPARATOR)}))),
        unnest(string_to_array($3, ','))
    ) AS v(task_id, result, score)
    WHERE v.task_id::bigint IS NOT NULL AND v.result::jsonb IS NOT NULL
      AND NULLIF(v.score, 'null')::float8 IS DISTINCT FROM -1
"""

Variant = tuple[str, Callable[[], tuple[Any, ...]]]


def _variants(count: int) -> dict[str, Variant]:
    task_ids = list(range(10**6, 10**6 + count))
    answers = [default_predict({"data": text})[0] for text in make_texts(count)]
    results = [orjson.dumps(answer["result"]).decode() for answer in answers]
    scores: list[float | None] = [answer["score"] for answer in answers]
    return {
        "arrays (before)": (_AS_ARRAYS, lambda: (task_ids, results, scores)),
        "one text each (now)": (
            _AS_TEXTS,
            lambda: (number_list(task_ids), RESULT_SEPARATOR.join(results), number_list(scores)),
        ),
    }


async def _calls(conn: asyncpg.Connection, variant: Variant, count: int, expected: int) -> Figures:
    statement, arguments = variant
    pid = conn.get_server_pid()
    server = cpu_seconds_of_tree(pid)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        if await conn.fetchval(statement, *arguments()) != expected:
            raise RuntimeError("the parameters did not arrive whole")
    return (
        (time.process_time() - cpu) / count * 1e6,
        (cpu_seconds_of_tree(pid) - server) / count * 1e6,
        (time.perf_counter() - wall) / count * 1e6,
    )


async def main_async(args: argparse.Namespace) -> None:
    variants = _variants(args.predictions)
    async with bench_database("bench_chunk_params") as url:
        conn = await asyncpg.connect(plain_postgres_url(url))
        try:
            for variant in variants.values():
                await _calls(conn, variant, 20, args.predictions)
            rounds: dict[str, list[Figures]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, variant in variants.items():
                    rounds[name].append(await _calls(conn, variant, args.calls, args.predictions))
        finally:
            await conn.close()
    print(
        f"µs per call of {args.predictions} predictions ({args.calls} calls x {args.rounds} rounds, "
        f"load {os.getloadavg()[0]:.1f})"
    )
    print_rounds(rounds, "arrays (before)", ["client CPU", "Postgres CPU", "wall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
