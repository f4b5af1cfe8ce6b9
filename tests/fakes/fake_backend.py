"""A programmable fake Label Studio ML backend: a real HTTP server on 127.0.0.1.

Gateway tests need the real wire (sockets, keep-alive, timeouts, concurrency), not mocks, so this
serves a FastAPI app with uvicorn in a background thread that runs its own event loop. Tests steer
it through ``backend.behaviour`` (a Behaviour; plain attribute assignment, or ``configure()`` to
change several fields at once) and read what it received from ``backend.requests``.

Benches use it as the "instant backend": ``python -m tests.fakes.fake_backend --port N --mode v2``
(no request recording, orjson bodies, routes without FastAPI's validation layer).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from shared.protocol import TRAINING_EVENTS
from tests.support.servers import bound_socket

Mode = Literal["v2", "v1"]
Garbage = Literal[
    "not_json",
    "not_object",
    "no_results",
    "results_not_list",
    "entry_not_dict",
    "result_not_list",
    "bad_score",
]
PredictFn = Callable[[dict[str, Any]], list[dict[str, Any]]]

HOST = "127.0.0.1"
DEFAULT_MODEL_VERSION = "fake-v1"
V1_SETUP_VERSION = "INITIAL"
V1_MODEL_DIR = "/fake/model_dir"

SENTIMENT_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
  </Choices>
</View>"""
"""The label config the default predictor's regions are valid for."""

_POSITIVE_WORDS = frozenset({"good", "great", "love", "excellent", "nice", "happy", "best"})
_WORD = re.compile(r"[a-z']+")


def default_predict(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One deterministic sentiment choice for ``task["data"]["text"]`` (see SENTIMENT_CONFIG)."""
    text = str(task.get("data", {}).get("text", "")).lower()
    positive = not _POSITIVE_WORDS.isdisjoint(_WORD.findall(text))
    region = {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": ["Positive" if positive else "Negative"]},
    }
    return [{"result": [region], "score": 0.9 if positive else 0.6}]


def distinct_predict(task: dict[str, Any]) -> list[dict[str, Any]]:
    """``default_predict`` with a region id of the task's own: no two results are written alike."""
    (prediction,) = default_predict(task)
    region = {**prediction["result"][0], "id": f"task-{task.get('id')}"}
    return [{**prediction, "result": [region]}]


@dataclass(slots=True)
class Behaviour:
    """What the fake backend does; slots make a misspelled field an error instead of a no-op."""

    mode: Mode = "v2"
    """Response shapes of the 2.x line or the 1.0.x line (PROTOCOL.md)."""
    model_version: str = DEFAULT_MODEL_VERSION
    """Per prediction in v2, top level in v1, from /setup in v2 (v1 /setup says INITIAL)."""
    model_class: str = "FakeBackend"
    predict_delay_s: float = 0.0
    predict_gate: threading.Event | None = None
    """When set, /predict requests after the first ``ungated_predicts`` wait until the event is set: a
    test holds them in flight (or keeps a job from finishing) for exactly as long as it needs."""
    ungated_predicts: int = 0
    setup_delay_s: float = 0.0
    health_delay_s: float = 0.0
    webhook_delay_s: float = 0.0
    fail_next_n: int = 0
    """The next N requests (within fail_paths) answer ``fail_status`` with a 2.x error body."""
    fail_status: int = 503
    retry_after_n: int = 0
    """The next N requests (within fail_paths) answer 429 with ``Retry-After: retry_after_s``."""
    retry_after_s: int = 1
    always_fail: int | None = None
    """Every request (within fail_paths) answers this status with a 2.x error body."""
    fail_paths: frozenset[str] | None = None
    """Paths the three failure knobs above apply to; None means every path."""
    garbage: Garbage | None = None
    """Malformed answers on garbage_paths; on paths other than /predict any kind but not_json
    answers a JSON list."""
    garbage_paths: frozenset[str] = frozenset({"/predict"})
    single_result: bool = False
    """/predict answers one result whatever the task count (a backend that cannot batch)."""
    wrong_count: int | None = None
    """/predict answers exactly this many results (padded with empty entries)."""
    empty_results: bool = False
    """/predict answers an empty list for every task (a model that knows nothing yet)."""
    poison_task_value: Any = None
    """A batch holding a task with this value in ``data`` answers 500 with a 2.x detail."""
    require_basic_auth: tuple[str, str] | None = None
    """(user, password) required on every route; 401 with WWW-Authenticate otherwise."""
    predict_fn: PredictFn = default_predict
    """task -> predictions (without model_version); raising answers 500 with a 2.x detail."""
    echo_context: bool = True
    """With ``params.context`` set, predict ``context["result"]`` back (interactive backends)."""
    webhook_fail: int | None = None
    """/webhook answers this status with an HTML error page, as 2.x does."""
    version_after_train: str | None = None
    """A training event or /train switches model_version to this."""
    hold_setup: threading.Event | None = None
    """/setup answers only once this is set: a backend exactly as slow as a test needs, no sleeps."""
    hold_webhook: threading.Event | None = None
    """/webhook answers only once this is set."""
    webhook_refuse_text: str | None = None
    """/webhook bodies containing this text anywhere answer 422, a NUL in the detail (a backend rejecting
    one kind of event)."""
    predict_body: Any = None
    """When set, /predict answers exactly this JSON whatever it is asked (odd but legal shapes); bytes go
    as they are (JSON that orjson would not write)."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received; ``body`` is parsed JSON, raw bytes if not JSON, None if empty."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    """time.monotonic() on arrival."""


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def _error(status: int, detail: str) -> Response:
    """The 2.x error shape: ``{"status": ..., "detail": "<Exc>: msg"}``."""
    return _json({"status": status, "detail": detail}, status)


def _html_error(status: int, title: str, text: str) -> Response:
    """A Flask-style HTML error page, which is what 2.x sends for some routes."""
    page = (
        f"<!doctype html>\n<html lang=en>\n<title>{status} {title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n"
    )
    return Response(page, status, media_type="text/html")


def _not_found() -> Response:
    return _html_error(404, "Not Found", "The requested URL was not found on the server.")


Handler = Callable[[Any], Awaitable[Response]]


class FakeBackend:
    """A fake ML backend on 127.0.0.1; ``with FakeBackend() as backend: backend.url``.

    The port is bound at construction, so ``url`` is known (and refuses connections) before
    ``start()``; ``stop()`` then ``start()`` serves again on the same port.
    """

    def __init__(self, port: int = 0, *, behaviour: Behaviour | None = None, record: bool = True) -> None:
        self._initial = behaviour or Behaviour()
        self.behaviour = dataclasses.replace(self._initial)
        self.record = record
        self.lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._predicts = 0
        self._jobs = 0
        self._socket: socket.socket | None = self._bind(port)
        self.port: int = self._socket.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.app = self._build_app()

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @staticmethod
    def _bind(port: int) -> socket.socket:
        return bound_socket(port)

    def _new_server(self) -> tuple[uvicorn.Server, socket.socket]:
        if self._socket is None:
            self._socket = self._bind(self.port)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off", backlog=4096)
        return uvicorn.Server(config), self._socket

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        async def serve() -> None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
            await server.serve(sockets=[sock])

        try:
            with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
                runner.run(serve())
        except BaseException as exc:  # surfaced by start(), the thread has nobody else to tell
            self._error = exc

    def start(self, timeout_s: float = 10.0) -> FakeBackend:
        if self._thread is not None:
            raise RuntimeError(f"fake backend on {self.url} is already running")
        server, sock = self._new_server()
        self._error = None
        thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"fake-backend:{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake backend on {self.url} did not start: {self._error!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop at once: connections drop mid-request, as when a backend process dies."""
        server, loop = self._server, self._loop
        if server is not None:
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop may have closed already
                    loop.call_soon_threadsafe(self._cut_off, server)
            server.should_exit = True
            server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self._loop = self._stopping = None

    def _cut_off(self, server: uvicorn.Server) -> None:
        """On the server loop: wake delayed handlers and drop every connection."""
        if self._stopping is not None:
            self._stopping.set()
        for connection in list(server.server_state.connections):
            connection.transport.abort()

    def serve_forever(self) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM (the module's command line)."""
        server, sock = self._new_server()
        server.run(sockets=[sock])

    def __enter__(self) -> FakeBackend:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- programming and inspection -------------------------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change several behaviour fields atomically (unknown names raise TypeError)."""
        known = {field.name for field in dataclasses.fields(Behaviour)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown behaviour fields: {sorted(unknown)}")
        with self.lock:
            for name, value in changes.items():
                setattr(self.behaviour, name, value)

    def reset(self) -> None:
        """Back to the behaviour given at construction; forget requests and concurrency peaks."""
        with self.lock:
            for field in dataclasses.fields(Behaviour):
                setattr(self.behaviour, field.name, getattr(self._initial, field.name))
            self._requests.clear()
            self._max_in_flight = self._in_flight
            self._predicts = 0
            self._jobs = 0

    def clear_requests(self) -> None:
        with self.lock:
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self.lock:
            return list(self._requests)

    def calls(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    async def wait_for_calls(self, path: str, count: int, timeout_s: float = 5.0) -> None:
        """Wait until ``path`` received ``count`` requests (for deliveries made in background)."""
        deadline = time.monotonic() + timeout_s
        while len(self.calls(path)) < count:
            if time.monotonic() > deadline:
                got = len(self.calls(path))
                raise TimeoutError(f"{path}: {got} of {count} calls after {timeout_s}s")
            await asyncio.sleep(0.01)

    @property
    def current_concurrency(self) -> int:
        """/predict requests being handled right now."""
        with self.lock:
            return self._in_flight

    @property
    def max_concurrency(self) -> int:
        """Most /predict requests handled at once since construction or reset()."""
        with self.lock:
            return self._max_in_flight

    # ---- the HTTP side ---------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """A programmed delay that ends early when the backend stops (no cancelled handlers)."""
        if not seconds:
            return
        stopping = self._stopping
        if stopping is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)

    def _build_app(self) -> FastAPI:
        # Plain Starlette routes: no per-request validation layer, so the fake stays "instant".
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        routes: list[tuple[str, list[str], Handler]] = [
            ("/", ["GET"], self._health),
            ("/health", ["GET"], self._health),
            ("/setup", ["POST"], self._setup),
            ("/predict", ["POST"], self._predict),
            ("/webhook", ["POST"], self._webhook),
            ("/metrics", ["GET"], self._metrics),
            ("/train", ["POST"], self._train),
            ("/versions", ["POST"], self._versions),
            ("/versions", ["GET"], self._versions_get),
        ]
        for path, methods, handler in routes:
            app.add_route(path, self._endpoint(path, handler), methods=methods)
        return app

    def _endpoint(self, path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = raw
            if self.record:
                recorded = RecordedRequest(
                    request.method, request.url.path, dict(request.headers), body, time.monotonic()
                )
                with self.lock:
                    self._requests.append(recorded)
            refusal = self._refusal(request, path)
            if refusal is not None:
                return refusal
            garbage = self.behaviour.garbage
            if garbage is not None and path != "/predict" and path in self.behaviour.garbage_paths:
                if garbage == "not_json":
                    return Response(b"<<not json>>", media_type="application/json")
                return _json(["garbage"])
            try:
                return await handler(body)
            except Exception as exc:  # the 2.x SDK wraps any backend error like this
                return _error(500, f"{type(exc).__name__}: {exc}")

        return endpoint

    def _refusal(self, request: Request, path: str) -> Response | None:
        """Auth and injected failures, in the order a real deployment would produce them."""
        b = self.behaviour
        if b.require_basic_auth is not None:
            user, password = b.require_basic_auth
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if request.headers.get("authorization") != expected:
                headers = {"WWW-Authenticate": 'Basic realm="Login Required"'}
                return Response("Unauthorized", 401, headers, media_type="text/plain")
        if b.fail_paths is not None and path not in b.fail_paths:
            return None
        if b.always_fail is not None:
            return _error(b.always_fail, f"FakeBackendError: always failing with {b.always_fail}")
        with self.lock:
            if b.retry_after_n > 0:
                b.retry_after_n -= 1
                headers = {"Retry-After": str(b.retry_after_s)}
                return _json({"status": 429, "detail": "Too Many Requests"}, 429, headers)
            if b.fail_next_n > 0:
                b.fail_next_n -= 1
                status = b.fail_status
                return _error(status, f"FakeBackendError: injected failure {status}")
        return None

    async def _health(self, _: Any) -> Response:
        b = self.behaviour
        await self._pause(b.health_delay_s)
        if b.mode == "v1":
            return _json({"status": "UP", "model_dir": V1_MODEL_DIR, "v2": False})
        return _json({"status": "UP", "model_class": b.model_class})

    async def _setup(self, _: Any) -> Response:
        b = self.behaviour
        await self._pause(b.setup_delay_s)
        if b.hold_setup is not None:
            await asyncio.to_thread(b.hold_setup.wait, 60.0)
        version = V1_SETUP_VERSION if b.mode == "v1" else b.model_version
        return _json({"model_version": version})

    async def _gate(self, number: int) -> None:
        """Wait for ``predict_gate`` unless this is one of the first ``ungated_predicts`` requests."""
        gate = self.behaviour.predict_gate
        while gate is not None and number > self.behaviour.ungated_predicts and not gate.is_set():
            if self._stopping is not None and self._stopping.is_set():
                return
            await asyncio.sleep(0.005)

    async def _predict(self, body: Any) -> Response:
        with self.lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._predicts += 1
            number = self._predicts
        try:
            await self._gate(number)
            await self._pause(self.behaviour.predict_delay_s)
            answer = self.behaviour.predict_body
            if isinstance(answer, bytes):
                return Response(answer, media_type="application/json")
            if answer is not None:
                return _json(answer)
            return self._predictions(body["tasks"], (body.get("params") or {}).get("context"))
        finally:
            with self.lock:
                self._in_flight -= 1

    def _predictions(self, tasks: list[dict[str, Any]], context: Any) -> Response:
        b = self.behaviour
        poison = b.poison_task_value
        if poison is not None:
            for task in tasks:
                if poison in task.get("data", {}).values():
                    return _error(500, f"ValueError: cannot predict task {task.get('id')}")
        v2 = b.mode == "v2"
        version = b.model_version
        entries: list[Any] = []
        for task in tasks:
            if b.empty_results:
                entries.append([])
                continue
            if context is not None and b.echo_context:
                predictions = [{"result": context.get("result", []), "score": 1.0}]
            else:
                predictions = b.predict_fn(task)
            if v2:
                predictions = [
                    p if "model_version" in p else {**p, "model_version": version} for p in predictions
                ]
            entries.append(predictions[0] if len(predictions) == 1 else predictions)
        if b.single_result:
            entries = entries[:1]
        elif b.wrong_count is not None:
            entries = entries[: b.wrong_count] + [[]] * (b.wrong_count - len(entries))
        if b.garbage is not None and "/predict" in b.garbage_paths:
            return self._predict_garbage(b.garbage, entries)
        return _json({"results": entries} if v2 else {"results": entries, "model_version": version})

    @staticmethod
    def _predict_garbage(kind: Garbage, entries: list[Any]) -> Response:
        if kind == "not_json":
            return Response(b"<<not json>>", media_type="application/json")
        count = max(len(entries), 1)
        shapes: dict[str, Any] = {
            "not_object": [{"results": entries}],
            "no_results": {"predictions": entries},
            "results_not_list": {"results": "none"},
            "entry_not_dict": {"results": ["Positive"] * count},
            "result_not_list": {"results": [{"result": "Positive", "score": 0.5}] * count},
            "bad_score": {"results": [{"result": [], "score": "high"}] * count},
        }
        return _json(shapes[kind])

    async def _webhook(self, body: Any) -> Response:
        b = self.behaviour
        await self._pause(b.webhook_delay_s)
        if b.hold_webhook is not None:
            await asyncio.to_thread(b.hold_webhook.wait, 60.0)
        if b.webhook_fail is not None:
            return _html_error(b.webhook_fail, "Internal Server Error", "FakeBackendError: webhook failed")
        if b.webhook_refuse_text is not None and b.webhook_refuse_text in orjson.dumps(body).decode():
            # A NUL in the detail, as hostile backends send: the refusal must still be recorded.
            return _error(422, f"ValueError: cannot learn from {b.webhook_refuse_text!r}\x00")
        action = body.get("action") if isinstance(body, dict) else None
        if b.mode == "v1":
            self._train_happened()
            return _json({"job_id": self._next_job()}, 201)
        if action not in TRAINING_EVENTS:
            return _json({"status": "Unknown event"})
        self._train_happened()
        return _json({"result": {"model_version": b.model_version}, "status": "ok"}, 201)

    async def _train(self, _: Any) -> Response:
        if self.behaviour.mode == "v2":
            return _not_found()
        self._train_happened()
        return _json({"job": self._next_job()}, 201)

    async def _versions(self, _: Any) -> Response:
        b = self.behaviour
        if b.mode == "v2":
            return _not_found()
        return _json({"versions": [b.model_version], "model_dir": V1_MODEL_DIR})

    async def _versions_get(self, _: Any) -> Response:
        """1.0.x serves /versions for POST only."""
        if self.behaviour.mode == "v2":
            return _not_found()
        return _html_error(405, "Method Not Allowed", "The method is not allowed for the requested URL.")

    async def _metrics(self, _: Any) -> Response:
        return _json({})

    def _train_happened(self) -> None:
        with self.lock:
            if self.behaviour.version_after_train is not None:
                self.behaviour.model_version = self.behaviour.version_after_train

    def _next_job(self) -> str:
        with self.lock:
            self._jobs += 1
            return f"fake-job-{self._jobs}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an instant fake ML backend on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--mode", choices=["v2", "v1"], default="v2")
    parser.add_argument("--model-version", default=DEFAULT_MODEL_VERSION)
    parser.add_argument("--predict-delay-s", type=float, default=0.0)
    parser.add_argument(
        "--distinct-results", action="store_true", help="a region id per task: no two results alike"
    )
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        mode=args.mode, model_version=args.model_version, predict_delay_s=args.predict_delay_s
    )
    if args.distinct_results:
        behaviour.predict_fn = distinct_predict
    backend = FakeBackend(args.port, behaviour=behaviour, record=False)
    print(f"fake ML backend ({args.mode}) on {backend.url}", flush=True)
    backend.serve_forever()


if __name__ == "__main__":
    main()
