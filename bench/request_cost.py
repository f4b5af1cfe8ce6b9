"""CPU per request of the API's small, frequent calls, by process: what one more user or worker costs.

The stack is ``make run``'s layout (a users' API and an ``/internal`` API process, a gateway, one worker, the
fake backend) on a project of ``--tasks`` tasks that a bulk job predicted. Then, one call at a time from this
process, ``--calls`` of each kind: the users' reads a console and SDK repeat (job, project, task page), an
annotation submitted (a request with a body, whose token is checked before the body is read), and the
workers' chunk calls on a finished chunk (lease and heartbeat answer without predicting anything). For each
kind it prints the CPU the serving API process and the Postgres server spent per call (their process trees
in ``/proc``), so a change to the request path (middleware, routing, sessions, statements) can be measured in
isolation from the bulk pipeline. ``/health`` is the floor: no database, the middleware and routing only.

    make bench-requests      # or: python -m devstack.exec -- python -m bench.request_cost --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import asyncpg
import httpx

from bench.harness import (
    API_TOKEN,
    SERVICE_TOKEN,
    bench_database,
    cpu_seconds_by_tree,
    full_stack,
    postgres_pid,
)
from bench.history import action, check, project_with_predictions
from shared.settings import plain_postgres_url
from tests.support.builders import choice


async def per_call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    calls: int,
    pids: dict[str, list[int]],
    kind: str,
    body: Any = None,
) -> tuple[float, float]:
    """(µs of ``kind``'s CPU, µs of Postgres's CPU) per call, over ``calls`` calls made one after another."""
    check(await client.request(method, path, json=body))
    before = cpu_seconds_by_tree(pids)
    for _ in range(calls):
        check(await client.request(method, path, json=body))
    after = cpu_seconds_by_tree(pids)
    return (
        (after[kind] - before[kind]) / calls * 1e6,
        (after["Postgres"] - before["Postgres"]) / calls * 1e6,
    )


async def main_async(args: argparse.Namespace) -> None:
    async with bench_database("bench_request_cost") as url:
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        with full_stack(url, redis_url, workers=1, internal_apis=1) as running:
            pids = {**running.pids, "Postgres": [await postgres_pid(url)]}
            user_headers = {"Authorization": f"Token {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=running.api_url, headers=user_headers, timeout=600) as api:
                project_id, _ = await project_with_predictions(api, running.backend_url, args.tasks, "calls")
                _, _, job_id = await action(api, "retrieve_tasks_predictions", project_id)
                db = await asyncpg.connect(plain_postgres_url(url))
                try:
                    chunk_id = await db.fetchval("SELECT min(id) FROM job_chunk WHERE job_id = $1", job_id)
                finally:
                    await db.close()
                print(
                    f"CPU per call, {args.calls} calls of each, one at a time, {args.tasks} tasks, "
                    f"load {os.getloadavg()[0]:.1f}"
                )
                print(f"  {'call':<50} {'API process':>12} {'Postgres':>10}")
                task_id = (await api.get("/api/tasks", params={"project": project_id})).json()["tasks"][0][
                    "id"
                ]
                annotation = {"result": choice("Positive")}
                users: list[tuple[str, str, Any]] = [
                    ("GET", "/health", None),
                    ("GET", f"/api/jobs/{job_id}", None),
                    ("GET", f"/api/projects/{project_id}", None),
                    ("GET", f"/api/tasks?project={project_id}&page=1&page_size=30", None),
                    ("POST", f"/api/tasks/{task_id}/annotations", annotation),
                ]
                for method, path, body in users:
                    api_us, postgres_us = await per_call(api, method, path, args.calls, pids, "API", body)
                    print(f"  {method + ' ' + path:<50} {api_us:>10.0f} µs {postgres_us:>7.0f} µs")
            service_headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
            async with httpx.AsyncClient(
                base_url=running.internal_urls[0], headers=service_headers, timeout=60
            ) as internal:
                for method, path in [
                    ("GET", "/health"),
                    ("POST", f"/internal/chunks/{chunk_id}/heartbeat"),
                    ("POST", f"/internal/chunks/{chunk_id}/lease"),
                ]:
                    api_us, postgres_us = await per_call(
                        internal, method, path, args.calls, pids, "internal API"
                    )
                    label = f"{method} {path} (/internal API)"
                    print(f"  {label:<50} {api_us:>10.0f} µs {postgres_us:>7.0f} µs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls of each kind")
    parser.add_argument("--tasks", type=int, default=2000)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
