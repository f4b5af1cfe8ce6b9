"""What the benchmarks share: a throwaway migrated database, uvicorn processes, the annotation API serving
the database, latency percentiles.

Run under ``python -m devstack.exec --`` (the Makefile does), which provides DATABASE_URL / REDIS_URL;
the benchmark creates its own database on that server and drops it afterwards, so it never touches the
data ``make run`` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from devstack.embedded import free_port
from tests.support.databases import alembic, drop_database, own_redis_database, recreate_database, unique_name

BENCH_TOKEN = "bench0123456789abcdef0123456789abcdef0123"
API_TOKEN = "bench0123456789abcdef0123456789abcdef0bulk"
"""The API token of the full stack (``stack``, ``bench_stack``)."""
SERVICE_TOKEN = "bench-service-token-bulk"
REPO_ROOT = Path(__file__).resolve().parents[1]
_START_TIMEOUT_S = 30.0


@dataclass
class BenchApi:
    client: httpx.AsyncClient
    database_url: str
    pid: int


async def _wait_healthy(client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"annotation API exited with {process.returncode}")
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("annotation API did not become healthy in time")


LABEL_CONFIG = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="positive"/><Choice value="negative"/>
  </Choices>
</View>
"""
"""A two-choice text config the API benchmarks create their projects with."""


@asynccontextmanager
async def bench_database(prefix: str) -> AsyncIterator[str]:
    """A migrated database named ``<prefix>_<pid>_<n>`` on DATABASE_URL's server, dropped on exit."""
    server_url = os.environ["DATABASE_URL"]
    name = unique_name(prefix)
    url = await recreate_database(server_url, name)
    try:
        await asyncio.to_thread(alembic, url, "upgrade", "head")
        yield url
    finally:
        await drop_database(server_url, name)


def uvicorn_command(factory: str, port: int) -> list[str]:
    """``python -m uvicorn <factory> --factory`` on 127.0.0.1:``port``, quiet."""
    command = [sys.executable, "-m", "uvicorn", factory, "--factory"]
    return command + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]


@asynccontextmanager
async def bench_api(prefix: str) -> AsyncIterator[BenchApi]:
    """A migrated database named ``<prefix>_<pid>_<n>`` and the API serving it; both gone on exit.

    The API runs as its own uvicorn process, as deployed, so the client never competes with it for
    the GIL and figures are per-request server latency plus loopback HTTP.
    """
    async with bench_database(prefix) as url:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LABELLOOP_API_TOKEN": BENCH_TOKEN,
            "LABELLOOP_MAX_PAGE_SIZE": "1000",
            "LABELLOOP_LOG_LEVEL": "WARNING",
        }
        command = uvicorn_command("services.annotation_api.main:app_from_env", port)
        process = await asyncio.create_subprocess_exec(*command, env=env, cwd=REPO_ROOT)
        try:
            headers = {"Authorization": f"Token {BENCH_TOKEN}"}
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=600) as client:
                await _wait_healthy(client, process)
                yield BenchApi(client=client, database_url=url.replace("+asyncpg", ""), pid=process.pid)
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=15)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout_s:.0f} s")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """Every process's parent and the CPU seconds (user + system) it and its reaped children used (``/proc``)."""
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        used = sum(int(field) for field in fields[11:15]) / _CLOCK_TICKS  # utime stime cutime cstime
        found[int(entry.name)] = (int(fields[1]), used)
    return found


def _trees(roots: dict[str, list[int]], processes: dict[int, tuple[int, float]]) -> dict[str, list[int]]:
    """Each kind's processes and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    trees: dict[str, list[int]] = {}
    for kind, pids in roots.items():
        tree, todo = [], list(pids)
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        trees[kind] = tree
    return trees


def cpu_seconds_by_tree(roots: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each kind's processes and all their descendants (Linux
    ``/proc``), children that already exited included (their parent has reaped their time).

    A difference of two samples is what the kind used in between, even if processes came and went.
    """
    processes = _processes()
    return {
        kind: sum(processes[pid][1] for pid in tree if pid in processes)
        for kind, tree in _trees(roots, processes).items()
    }


def cpu_seconds_of_tree(pid: int) -> float:
    """CPU seconds used so far by one process and its descendants (``cpu_seconds_by_tree`` for one root),
    e.g. a Postgres server process of a benchmark's connection."""
    return cpu_seconds_by_tree({"tree": [pid]})["tree"]


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_mb(pid: int | str = "self") -> float:
    return _status_kb(pid, "VmRSS") / 1024


def peak_mb(pid: int | str = "self") -> float:
    """The highest RSS since the process started or since ``reset_peak`` (VmHWM)."""
    return _status_kb(pid, "VmHWM") / 1024


def reset_peak(pid: int | str) -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+, own processes)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True)
class Memory:
    """RSS of a kind's processes (and their descendants), summed, in MB."""

    now: float
    peak: float
    """The sum of each process's own peak since ``reset_peaks_by_tree``: at least the peak of the sum."""


def reset_peaks_by_tree(roots: dict[str, list[int]]) -> None:
    for tree in _trees(roots, _processes()).values():
        for pid in tree:
            with contextlib.suppress(OSError):  # exited meanwhile
                reset_peak(pid)


def memory_by_tree(roots: dict[str, list[int]]) -> dict[str, Memory]:
    """RSS now and at peak for each kind, over its processes and their descendants (Linux ``/proc``)."""
    totals: dict[str, Memory] = {}
    for kind, tree in _trees(roots, _processes()).items():
        now = peak = 0.0
        for pid in tree:
            with contextlib.suppress(OSError):  # exited meanwhile
                now, peak = now + rss_mb(pid), peak + peak_mb(pid)
        totals[kind] = Memory(now, peak)
    return totals


async def postgres_pid(database_url: str) -> int:
    """The pid of the Postgres server (postmaster) behind ``database_url``: its backends' parent."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        return _parent(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@dataclass
class Stack:
    """A running ``full_stack``: its URLs and the pids of each kind of process."""

    api_url: str
    backend_url: str
    pids: dict[str, list[int]]
    internal_urls: list[str]
    """The API processes the workers call (``[api_url]`` without extra ``/internal`` processes)."""


@contextlib.contextmanager
def full_stack(
    database_url: str,
    redis_url: str,
    workers: int,
    extra_env: dict[str, str] | None = None,
    internal_apis: int = 0,
) -> Iterator[Stack]:
    """Start backend, API, gateway and workers, on ``redis_url``'s server in a Redis database of their own
    (``own_redis_database``); yields them as a ``Stack``; stops them all.

    ``internal_apis``: that many more API processes serve the workers' ``/internal`` calls (worker ``i``
    calls process ``i mod internal_apis``) and run the background loops, which the users' API then does
    not (unless ``LABELLOOP_BACKGROUND_LOOPS`` is set in the environment: the layout before), as
    ``make run`` with one."""
    redis_url = own_redis_database(redis_url)  # never make run's queue: its worker would take our chunks
    api_port, gateway_port, backend_port = free_port(), free_port(), free_port()
    api_url, gateway_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{gateway_port}"
    backend_url = f"http://127.0.0.1:{backend_port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LABELLOOP_API_TOKEN": API_TOKEN,
        "LABELLOOP_SERVICE_TOKEN": SERVICE_TOKEN,
        "LABELLOOP_PUBLIC_URL": api_url,
        "LABELLOOP_GATEWAY_URL": gateway_url,
        "LABELLOOP_API_URL": api_url,
        "LABELLOOP_ALLOWED_NETWORKS": "127.0.0.0/8",
        "LABELLOOP_LOG_LEVEL": "WARNING",
        # No probe listener: every worker would bind the default port 9100 and all but one would exit.
        "LABELLOOP_WORKER_PROBE_PORT": "0",
        **(extra_env or {}),
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        backend = _spawn([sys.executable, "-m", "tests.fakes.fake_backend", "--port", str(backend_port)], env)
        processes.append(backend)
        users_env = {"LABELLOOP_BACKGROUND_LOOPS": "false", **env} if internal_apis else env
        api = _spawn(uvicorn_command("services.annotation_api.main:app_from_env", api_port), users_env)
        processes.append(api)
        worker_envs = [env]
        internal_urls = [api_url]
        if internal_apis:
            internal_urls = []
            worker_envs = []
            internal_env = {**env, "LABELLOOP_BACKGROUND_LOOPS": "true"}
            for _ in range(internal_apis):
                port = free_port()
                internal = _spawn(
                    uvicorn_command("services.annotation_api.main:app_from_env", port), internal_env
                )
                processes.append(internal)
                _wait_ready(f"http://127.0.0.1:{port}/ready", internal)
                internal_urls.append(f"http://127.0.0.1:{port}")
                worker_envs.append({**env, "LABELLOOP_API_URL": internal_urls[-1]})
        gateway = _spawn(uvicorn_command("services.model_gateway.main:app_from_env", gateway_port), env)
        processes.append(gateway)
        first_worker = len(processes)
        processes.extend(
            _spawn([sys.executable, "-m", "services.model_gateway.worker"], worker_envs[i % len(worker_envs)])
            for i in range(workers)
        )
        _wait_ready(f"{backend_url}/health", backend)
        _wait_ready(f"{api_url}/ready", api)
        _wait_ready(f"{gateway_url}/ready", gateway)
        pids = {
            "API": [api.pid],
            "internal API": [process.pid for process in processes[2 : first_worker - 1]],
            "gateway": [gateway.pid],
            "workers": [process.pid for process in processes[first_worker:]],
            "backend": [backend.pid],
        }
        yield Stack(api_url, backend_url, pids, internal_urls)
    finally:
        # Workers first, each gone before the next stops, so none is left calling a stopped API.
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextlib.contextmanager
def stack(
    database_url: str, redis_url: str, workers: int, internal_apis: int = 0
) -> Iterator[tuple[str, str]]:
    """The ``make run``-style process tree: an instant fake ML backend, the annotation API and the gateway
    API (uvicorn) and ``workers`` gateway workers, on ``database_url``; yields (api_url, backend_url)."""
    with full_stack(database_url, redis_url, workers, internal_apis=internal_apis) as running:
        yield running.api_url, running.backend_url


@asynccontextmanager
async def bench_stack(
    prefix: str,
    workers: int = 2,
    extra_env: dict[str, str] | None = None,
    internal_apis: int = 0,
) -> AsyncIterator[tuple[BenchApi, str]]:
    """``stack`` on a database of its own (as ``bench_database``): (the API as a ``BenchApi``, backend URL).

    For the API benchmarks' ``--with-history`` mode, whose history predicts through the gateway."""
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    async with bench_database(prefix) as url:
        with full_stack(url, redis_url, workers, extra_env, internal_apis) as running:
            headers = {"Authorization": f"Token {API_TOKEN}"}
            async with httpx.AsyncClient(base_url=running.api_url, headers=headers, timeout=600) as client:
                database_url = url.replace("+asyncpg", "")
                api = BenchApi(client=client, database_url=database_url, pid=running.pids["API"][0])
                yield api, running.backend_url


def make_texts(count: int) -> list[dict[str, str]]:
    return [
        {"text": f"review {i}: the product is {'good' if i % 3 else 'broken'} and arrived on time"}
        for i in range(count)
    ]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def latencies(
    call: Callable[[], Awaitable[None]], requests: int, warmup: int = 3
) -> tuple[float, float]:
    """(median, p99) in milliseconds over ``requests`` sequential calls, after a short warm-up."""
    loop = asyncio.get_running_loop()
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(requests):
        started = loop.time()
        await call()
        samples.append((loop.time() - started) * 1000)
    return statistics.median(samples), percentile(samples, 0.99)


def print_rounds(
    rounds: Mapping[str, Sequence[Sequence[float]]], baseline: str, columns: Sequence[str]
) -> None:
    """One line per variant: each column's figure for every round, then the ratio of its median to the
    baseline variant's (the in-process A/B benchmarks, rounds alternated between variants)."""
    medians = {
        name: [statistics.median(figure[i] for figure in figures) for i in range(len(columns))]
        for name, figures in rounds.items()
    }
    for name, figures in rounds.items():
        line = "  ".join(
            f"{column} {' '.join(f'{figure[i]:4.0f}' for figure in figures)} "
            f"({medians[name][i] / medians[baseline][i]:.2f})"
            for i, column in enumerate(columns)
        )
        print(f"  {name:27} {line}")
