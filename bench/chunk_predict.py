"""A gateway worker's own CPU per task for one chunk: the lease read, the predictions through
``BackendGateway`` over HTTP to an instant fake backend (in its own process), and the report written.

Runs in this process, without Redis, the API or the backend's CPU, so the figure is the worker's work alone:
``make bench-bulk`` measures the same work inside the whole stack, where its share of the two cores and
the caches moves it. Two backends take turns, round by round, so drift hits both alike: one answers the
same few results for all its tasks (a classifier, as ``make bench-bulk``'s does) and one a result of its
own per task (a region id each, as span and box tools answer). The gateway checks a result text it has
seen before in the chunk once (``predictor._Collector``): the second row is the cost without that.

Run with ``make bench-chunk`` or ``python -m bench.chunk_predict``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import uvloop

from bench.gateway_overhead import process
from devstack.embedded import free_port
from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import encode_report, parse_lease
from shared.gateway_contract import BackendSpec, ProjectRef
from shared.runtime import tune_garbage_collector
from tests.fakes.fake_backend import SENTIMENT_CONFIG

CHUNK_SIZE = 1000
"""Tasks per chunk, as the API plans them."""
CHUNKS_AT_ONCE = 3
"""A worker's jobs at once (``worker_max_jobs``' default)."""
PROJECT = ProjectRef(id=1, created_at_ts=1_700_000_000, label_config=SENTIMENT_CONFIG)


@contextmanager
def fake_backend(*flags: str) -> Iterator[str]:
    """An instant fake backend in a process of its own; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tests.fakes.fake_backend", "--port", str(port), *flags]
    with process("fake backend", command, f"{url}/health", dict(os.environ)):
        yield url


def lease_body(spec: BackendSpec) -> bytes:
    """A chunk's lease as the API writes it, half its texts positive."""
    tasks = [
        {"id": number, "data": {"text": f"a {'great' if number % 2 else 'dull'} day, number {number}"}}
        for number in range(1, CHUNK_SIZE + 1)
    ]
    lease = {
        "chunk_id": 1,
        "job_id": 1,
        "status": "leased",
        "backend": spec.model_dump(),
        "project": PROJECT.model_dump(),
        "skipped": 0,
        "lease_s": 120.0,
        "tasks": tasks,
    }
    return orjson.dumps(lease)


async def chunk(gateway: BackendGateway, spec: BackendSpec, body: bytes) -> None:
    """What ``process_chunk`` does between its lease and report calls."""
    lease = parse_lease(body)
    predicted = await gateway.predict(spec, PROJECT, lease.tasks)
    if len(predicted.predictions) != CHUNK_SIZE:
        raise RuntimeError(f"a chunk stored {len(predicted.predictions)} predictions: {predicted.errors[:2]}")
    encode_report(predicted, [task["id"] for task in lease.tasks])


async def cpu_us_per_task(gateway: BackendGateway, spec: BackendSpec, chunks: int) -> float:
    """This process's CPU per task over ``chunks`` chunks, ``CHUNKS_AT_ONCE`` at a time."""
    body = lease_body(spec)
    left = iter(range(chunks))

    async def run() -> None:
        for _ in left:
            await chunk(gateway, spec, body)

    started = time.process_time()
    await asyncio.gather(*(run() for _ in range(CHUNKS_AT_ONCE)))
    return (time.process_time() - started) / (chunks * CHUNK_SIZE) * 1e6


async def main_async(args: argparse.Namespace) -> None:
    settings = GatewaySettings(allowed_networks=["127.0.0.0/8"])
    with fake_backend() as repeated_url, fake_backend("--distinct-results") as distinct_url:
        gateway = BackendGateway(settings)
        specs = {
            "repeated": BackendSpec(id=1, url=repeated_url, batch_size=args.batch_size, model_version="v1"),
            "distinct": BackendSpec(id=2, url=distinct_url, batch_size=args.batch_size, model_version="v1"),
        }
        try:
            for spec in specs.values():  # warm: connections, the label config parsed, code paths taken
                await cpu_us_per_task(gateway, spec, CHUNKS_AT_ONCE)
            tune_garbage_collector()  # as the worker does once started
            figures: dict[str, list[float]] = {kind: [] for kind in specs}
            for _ in range(args.rounds):
                for kind, spec in specs.items():
                    figures[kind].append(await cpu_us_per_task(gateway, spec, args.chunks))
        finally:
            await gateway.aclose()
    print(
        f"a worker's CPU µs per task: {args.rounds} rounds of {args.chunks} chunks of {CHUNK_SIZE} tasks, "
        f"{CHUNKS_AT_ONCE} at a time, batch {args.batch_size}"
    )
    print("  results    " + "  ".join(f"round {n + 1}" for n in range(args.rounds)) + "   median")
    for kind, values in figures.items():
        row = "  ".join(f"{value:7.2f}" for value in values)
        print(f"  {kind:9s}  {row}  {statistics.median(values):7.2f}")
    ratio = statistics.median(figures["distinct"]) / statistics.median(figures["repeated"])
    print(f"  distinct / repeated: {ratio:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chunks", type=int, default=30, help="chunks per round and kind of results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100, help="tasks per /predict call")
    args = parser.parse_args(argv)
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
