"""The API's memory through large imports: peak and settled RSS of the API process (Linux /proc).

Two imports, each streamed from the client in 64 KB pieces (the client never holds the body):
``--big-mb`` of ~1 KB tasks (default 200 MB) and ``--tiny-mb`` of ~13-byte tasks (default 20 MB, about
1.5M tasks). For each it prints the RSS before, the peak during the request (VmHWM, reset first) and
the RSS once the request is over; the goal is a peak under 512 MB and an "after" near the baseline.

    make bench-import-memory BENCH_ARGS="--big-mb 50 --tiny-mb 5"
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from bench.harness import LABEL_CONFIG, BenchApi, bench_api

_PIECE = 64 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+, own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _task_lines(megabytes: float, task: bytes) -> Iterator[bytes]:
    count = max(1, int(megabytes * 1e6 / (len(task) + 1)))
    yield b"["
    for i in range(count - 1):
        yield task % i + b","
    yield task % count + b"]"


async def _body(lines: Iterator[bytes]) -> AsyncIterator[bytes]:
    piece: list[bytes] = []
    size = 0
    for line in lines:
        piece.append(line)
        size += len(line)
        if size >= _PIECE:
            yield b"".join(piece)
            piece.clear()
            size = 0
    yield b"".join(piece)


async def measure(api: BenchApi, name: str, megabytes: float, task: bytes) -> None:
    project = (
        await api.client.post("/api/projects", json={"title": name, "label_config": LABEL_CONFIG})
    ).json()
    before = rss_mb(api.pid)
    reset_peak(api.pid)
    started = time.perf_counter()
    response = await api.client.post(
        f"/api/projects/{project['id']}/import",
        content=_body(_task_lines(megabytes, task)),
        headers={"Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    peak = peak_mb(api.pid)
    await asyncio.sleep(2)  # let the API finish its after-request work before reading what it kept
    after = rss_mb(api.pid)
    tasks = response.json()["task_count"]
    print(
        f"{name:<6} {megabytes:>7.0f} {tasks:>10,} {elapsed:>8.1f} {before:>10.0f} {peak:>9.0f} {after:>9.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mb", type=float, default=200, help="body size of the ~1 KB-task import")
    parser.add_argument("--tiny-mb", type=float, default=20, help="body size of the tiny-task import")
    args = parser.parse_args()
    big_task = b'{"text": "task %d ' + b"x" * 1000 + b'"}'
    async with bench_api("llbench_importmem") as api:
        await measure_warmup(api)
        print(
            f"{'import':<6} {'body MB':>7} {'tasks':>10} {'s':>8} {'before MB':>10} {'peak MB':>9} {'after MB':>9}"
        )
        await measure(api, "1KB", args.big_mb, big_task)
        await measure(api, "tiny", args.tiny_mb, b'{"text":"%d"}')


async def measure_warmup(api: BenchApi) -> None:
    """One small import first, so the baseline includes what any first import loads (code, pools)."""
    project = (
        await api.client.post("/api/projects", json={"title": "w", "label_config": LABEL_CONFIG})
    ).json()
    response = await api.client.post(f"/api/projects/{project['id']}/import", json=[{"text": "warm-up"}])
    response.raise_for_status()


if __name__ == "__main__":
    asyncio.run(main())
