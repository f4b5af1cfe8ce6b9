"""The API's memory through large imports: peak and settled RSS of the API process (Linux /proc).

Imports streamed from the client in 64 KB pieces (the client never holds the body): ``--big-mb`` of
~1 KB tasks (default 200 MB), ``--tiny-mb`` of ~13-byte tasks (default 20 MB, about 1.5M tasks),
``--pred-mb`` of tasks with one inline ~1 KB prediction each (``/import``, default 200 MB), and
``--pred-mb`` of ~1 KB predictions for existing tasks (``/import/predictions``, spread over 10k tasks).
Then the ~1 KB-task import again, ``--repeat`` times (what an import leaves must not add up), and
``--bad-bodies`` requests whose ~4 MB JSON body is cut short (what a failed request holds must not add up).
For each it prints the RSS before, the peak during the request(s) (VmHWM, reset first) and the RSS once
they are over; the goal is a peak under 512 MB and an "after" near the baseline.

    make bench-import-memory BENCH_ARGS="--big-mb 50 --tiny-mb 5 --pred-mb 50"
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from bench.harness import LABEL_CONFIG, BenchApi, bench_api, peak_mb, reset_peak, rss_mb

_PIECE = 64 * 1024
_PREDICTED_TASKS = 10_000
"""Tasks the ``/import/predictions`` body spreads its predictions over (ids are consecutive)."""


def _task_lines(megabytes: float, task: bytes, first: int = 0, modulo: int = 0) -> Iterator[bytes]:
    """A JSON list of ``task % n`` of about ``megabytes``; n counts from 0, or cycles through ``modulo``
    ids from ``first`` (predictions for existing tasks)."""
    count = max(1, int(megabytes * 1e6 / (len(task) + 1)))
    yield b"["
    for i in range(count):
        yield task % (first + (i % modulo if modulo else i)) + (b"," if i < count - 1 else b"]")


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


async def _project(api: BenchApi, name: str) -> int:
    response = await api.client.post("/api/projects", json={"title": name, "label_config": LABEL_CONFIG})
    project_id: int = response.json()["id"]
    return project_id


async def _measured(
    api: BenchApi, name: str, megabytes: float, requests: Callable[[], Awaitable[int]]
) -> None:
    """Run ``requests`` (it returns the rows stored) and print the API's RSS before, at peak and after."""
    before = rss_mb(api.pid)
    reset_peak(api.pid)
    started = time.perf_counter()
    rows = await requests()
    elapsed = time.perf_counter() - started
    peak = peak_mb(api.pid)
    await asyncio.sleep(2)  # let the API finish its after-request work before reading what it kept
    after = rss_mb(api.pid)
    print(
        f"{name:<10} {megabytes:>7.0f} {rows:>10,} {elapsed:>8.1f} {before:>10.0f} {peak:>9.0f} {after:>9.0f}"
    )


async def measure(
    api: BenchApi, name: str, megabytes: float, lines: Iterator[bytes], project_id: int, path: str
) -> None:
    """Stream ``lines`` (``megabytes`` of them) to ``path`` of the project and print the RSS figures."""

    async def stream() -> int:
        response = await api.client.post(
            f"/api/projects/{project_id}/{path}",
            content=_body(lines),
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        body = response.json()
        rows: int = body.get("task_count", body.get("created", 0))
        return rows

    await _measured(api, name, megabytes, stream)


async def measure_bad_bodies(api: BenchApi, count: int) -> None:
    """``count`` project creations whose ~4 MB body (the JSON routes' cap) is cut short: each a 400."""
    body = b'{"title": "' + b"x" * 4_000_000 + b'", "label_config": '

    async def refused() -> int:
        for _ in range(count):
            response = await api.client.post(
                "/api/projects", content=body, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 400:
                raise RuntimeError(f"a cut-short body got {response.status_code}: {response.text[:200]}")
        return 0

    await _measured(api, f"bad x{count}", count * len(body) / 1e6, refused)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--big-mb", type=float, default=200, help="body size of the ~1 KB-task import")
    parser.add_argument("--tiny-mb", type=float, default=20, help="body size of the tiny-task import")
    parser.add_argument("--pred-mb", type=float, default=200, help="body size of each prediction import")
    parser.add_argument("--repeat", type=int, default=3, help="times the ~1 KB-task import is repeated")
    parser.add_argument("--bad-bodies", type=int, default=40, help="requests with a cut-short ~4 MB body")
    args = parser.parse_args()
    big_task = b'{"text": "task %d ' + b"x" * 1000 + b'"}'
    # ~1 KB of prediction: a valid choice, its region carrying a long meta text (stored, checked).
    region = (
        b'{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}'
    )
    prediction = b'{"result": [' + region + b', "meta": {"text": ["' + b"y" * 850 + b'"]}}], "score": 0.5'
    async with bench_api("llbench_importmem") as api:
        await measure_warmup(api)
        print(
            f"{'import':<10} {'body MB':>7} {'rows':>10} {'s':>8} {'before MB':>10} {'peak MB':>9} {'after MB':>9}"
        )
        for name, megabytes, task in (
            ("1KB", args.big_mb, big_task),
            ("tiny", args.tiny_mb, b'{"text":"%d"}'),
        ):
            lines = _task_lines(megabytes, task)
            await measure(api, name, megabytes, lines, await _project(api, name), "import")
        with_predictions = b'{"data": {"text": "task %d"}, "predictions": [' + prediction + b"}]}"
        lines = _task_lines(args.pred_mb, with_predictions)
        await measure(api, "tasks+pred", args.pred_mb, lines, await _project(api, "tp"), "import")
        project_id = await _project(api, "predictions")
        response = await api.client.post(
            f"/api/projects/{project_id}/import",
            params={"return_task_ids": "true"},
            json=[{"text": f"t{i}"} for i in range(_PREDICTED_TASKS)],
        )
        first = min(response.json()["task_ids"])
        lines = _task_lines(args.pred_mb, prediction + b', "task": %d}', first, _PREDICTED_TASKS)
        await measure(api, "predictions", args.pred_mb, lines, project_id, "import/predictions")
        for repeat in range(args.repeat):
            lines = _task_lines(args.big_mb, big_task)
            await measure(
                api, f"1KB #{repeat + 2}", args.big_mb, lines, await _project(api, "again"), "import"
            )
        await measure_bad_bodies(api, args.bad_bodies)


async def measure_warmup(api: BenchApi) -> None:
    """One small import first, so the baseline includes what any first import loads (code, pools)."""
    project = (
        await api.client.post("/api/projects", json={"title": "w", "label_config": LABEL_CONFIG})
    ).json()
    response = await api.client.post(f"/api/projects/{project['id']}/import", json=[{"text": "warm-up"}])
    response.raise_for_status()


if __name__ == "__main__":
    asyncio.run(main())
