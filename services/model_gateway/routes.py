"""The gateway's HTTP routes: internal ones for the annotation API, and a public predict.

``/internal/*`` (contract in ``shared.gateway_contract``) accept only the service token.
``POST /api/predict`` serves people who want predictions without storing them: it names a stored
backend by id and accepts the service token or a client API token, which the annotation API vouches for
through ``GET /api/current-user/whoami`` (positive answers cached briefly) before the body is read. The
backend and its project's label config come from the API (``/internal/predict-targets``, with the
caller's token, so a backend outside its organization is a 404): the gateway stays stateless, and a
caller can neither aim it at an address of its choice nor pick the timeouts the backend's breaker counts.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, get_type_hints

import httpx
import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.model_gateway.predictor import BackendGateway
from services.model_gateway.settings import GatewaySettings
from services.model_gateway.targets import TargetResolver
from shared.api_docs import CLIENT_TOKEN, SERVICE_TOKEN
from shared.gateway_contract import (
    BackendSpec,
    CheckBackendRequest,
    CheckBackendResult,
    PredictTasksRequest,
    PredictTasksResult,
    ProjectRef,
    WebhookRequest,
    WebhookResult,
)
from shared.json_types import JsonInt
from shared.json_values import find_bad_value
from shared.logging import outgoing_request_headers

_MAX_CACHED_TOKENS = 10_000


def _bearer(request: Request, *schemes: str) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() not in schemes or not value.strip():
        return None
    return value.strip()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _is_service_token(settings: GatewaySettings, given: str | None) -> bool:
    """Compared as bytes: ``compare_digest`` raises on non-ASCII str, and headers may hold any byte."""
    expected = settings.service_token
    return (
        bool(expected)
        and given is not None
        and secrets.compare_digest(given.encode("latin-1", "replace"), expected.encode())
    )


async def service_caller(request: Request) -> None:
    """Only labelloop services, holding the service token, may call ``/internal`` routes."""
    if not _is_service_token(request.app.state.settings, _bearer(request, "bearer")):
        raise _unauthorized(
            "This route is for labelloop services only (Authorization: Bearer <service token>)."
        )


class TokenVerifier:
    """Asks the annotation API whether a client token is valid; remembers yeses for ``ttl_s``.

    Only digests of tokens are kept. No is never cached, so a freshly created token works at once.
    """

    def __init__(self, api_url: str, ttl_s: float) -> None:
        self._client = httpx.AsyncClient(base_url=api_url.rstrip("/"), timeout=5.0, trust_env=False)
        self._ttl_s = ttl_s
        self._valid_until: dict[str, float] = {}

    async def verify(self, token: str) -> bool:
        if not token.isascii():
            return False  # API tokens are ASCII; this one could not even be sent on in a header
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        if self._valid_until.get(digest, 0.0) > now:
            return True
        headers = {"Authorization": f"Token {token}", **outgoing_request_headers()}
        try:
            response = await self._client.get("/api/current-user/whoami", headers=headers)
        except httpx.HTTPError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"cannot verify the token: annotation API unreachable ({exc})",
            ) from None
        if response.status_code in (401, 403):
            return False
        if response.status_code != 200:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"cannot verify the token: annotation API answered {response.status_code}",
            )
        if len(self._valid_until) >= _MAX_CACHED_TOKENS:
            self._valid_until = {key: until for key, until in self._valid_until.items() if until > now}
        if len(self._valid_until) < _MAX_CACHED_TOKENS:
            self._valid_until[digest] = now + self._ttl_s
        return True

    async def aclose(self) -> None:
        await self._client.aclose()


async def public_caller(request: Request) -> None:
    """The service token, or a client token (``Token <key>`` or ``Bearer <key>``) the API accepts."""
    token = _bearer(request, "token", "bearer")
    if token is None:
        raise _unauthorized("Authentication credentials were not provided (Authorization: Token <key>).")
    if _is_service_token(request.app.state.settings, token):
        return
    verifier: TokenVerifier = request.app.state.token_verifier
    if not await verifier.verify(token):
        raise _unauthorized("Invalid token.")


LeanEndpoint = Callable[[Any, Request], Awaitable[Response]]


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a chunked
    body is counted as it arrives and abandoned when over.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"body: at most {limit} bytes on this route",
        headers={"Connection": "close"},
    )


BodyLimit = Callable[[GatewaySettings], int]


class LeanRoute(APIRoute):
    """A route documented by FastAPI from its signature but served without FastAPI's request machinery.

    For every gateway route with a body: FastAPI reads and parses a body before running the route's
    dependencies, so an unauthenticated caller could make the gateway parse (and hold) any body. Here the
    route's declared dependencies (router-level auth) run first, in order; each must be ``async def
    dep(request: Request) -> None``, which is checked when the route is built. Then the body is read up to
    ``body_limit(settings)`` bytes (413 beyond) and validated straight from the bytes
    (``model_validate_json``, errors answered as FastAPI's usual 422). It also spares the interactive
    predict routes FastAPI's dependency solving and body handling, which cost more CPU than the
    gateway's own work. The endpoint must be ``async def f(body: <Model>, request: Request) -> Response``.
    """

    body_limit: BodyLimit = staticmethod(lambda settings: settings.internal_max_request_bytes)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: LeanEndpoint = self.endpoint
        model: type[BaseModel] = get_type_hints(endpoint)["body"]
        checks = [dependency.call for dependency in self.dependant.dependencies]
        for check in checks:
            if check is None or list(inspect.signature(check).parameters) != ["request"]:
                raise TypeError(f"{self.path}: LeanRoute dependencies must be async (request) -> None")
        body_limit = type(self).body_limit

        async def handler(request: Request) -> Response:
            for check in checks:
                await check(request)  # type: ignore[misc]
            raw = await read_capped_body(request, body_limit(request.app.state.settings))
            try:
                body = model.model_validate_json(raw)
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
                ) from None
            return await endpoint(body, request)

        return handler


class PublicLeanRoute(LeanRoute):
    """The public predict: any client token reaches it, so its body is capped tighter."""

    body_limit: BodyLimit = staticmethod(lambda settings: settings.public_max_request_bytes)


def _json_response(result: BaseModel) -> Response:
    """Serialized by pydantic in one step: FastAPI's response_model path would validate it again."""
    return Response(result.model_dump_json(), media_type="application/json")


# Security(...) only declares each credential in the spec (the docs' Authorize button); the *_caller
# dependencies after it check the header.
internal = APIRouter(
    prefix="/internal", tags=["internal"], dependencies=[Security(SERVICE_TOKEN), Depends(service_caller)]
)
public = APIRouter(
    prefix="/api", tags=["predict"], dependencies=[Security(CLIENT_TOKEN), Depends(public_caller)]
)


async def check_backend(body: CheckBackendRequest, request: Request) -> Response:
    """``/health`` then ``/setup`` of a backend; the failure kind says what to fix."""
    gateway: BackendGateway = request.app.state.gateway
    return _json_response(await gateway.check(body))


internal.add_api_route(
    "/backends/check",
    check_backend,
    methods=["POST"],
    response_model=CheckBackendResult,
    route_class_override=LeanRoute,
)


async def _predict(
    gateway: BackendGateway,
    backend: BackendSpec,
    project: ProjectRef,
    tasks: list[dict[str, Any]],
    context: dict[str, Any] | None,
    interactive: bool,
    max_response_bytes: int | None = None,
) -> PredictTasksResult:
    try:
        predicted = await gateway.predict(
            backend,
            project,
            tasks,
            context=context,
            interactive=interactive,
            max_response_bytes=max_response_bytes,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return predicted.as_result()


async def predict_tasks(body: PredictTasksRequest, request: Request) -> Response:
    """Predictions for tasks, validated and version-tagged, not stored; per-task errors inside."""
    gateway: BackendGateway = request.app.state.gateway
    result = await _predict(gateway, body.backend, body.project, body.tasks, body.context, body.interactive)
    return _json_response(result)


internal.add_api_route(
    "/predict",
    predict_tasks,
    methods=["POST"],
    response_model=PredictTasksResult,
    route_class_override=LeanRoute,
)


async def deliver_webhook(body: WebhookRequest, request: Request) -> Response:
    """One event to a backend's ``/webhook`` (or 1.0.x ``/train``); the backend's answer or error."""
    gateway: BackendGateway = request.app.state.gateway
    return _json_response(await gateway.webhook(body))


internal.add_api_route(
    "/webhook",
    deliver_webhook,
    methods=["POST"],
    response_model=WebhookResult,
    route_class_override=LeanRoute,
)


class PublicPredictRequest(BaseModel):
    """Unknown fields are refused: the route took a backend URL, timeout and label config before."""

    model_config = ConfigDict(extra="forbid", strict=True)

    backend: JsonInt = Field(
        ge=1,
        le=2**31 - 1,
        description="The stored ML backend's id (`GET /api/ml`); it is called as configured there, and "
        "its project's label config checks the predictions.",
    )
    tasks: list[dict[str, Any]] = Field(
        min_length=1,
        description="Task objects ({data: {...}}); a task without an integer id gets its position.",
    )
    context: dict[str, Any] | None = Field(
        default=None, description="The annotator's input for interactive pre-annotation, passed to /predict."
    )
    interactive: bool = Field(default=False, description="Tight timeout, one attempt.")

    @model_validator(mode="after")
    def _encodable(self) -> PublicPredictRequest:
        """Tasks must be sendable as JSON: integers beyond 64 bits, nesting past orjson's limit or lone
        surrogates were a 500. orjson finds them cheaply; only then is the walk naming the field run."""
        try:
            orjson.dumps((self.tasks, self.context))
        except orjson.JSONEncodeError:
            found = find_bad_value({"tasks": self.tasks, "context": self.context}, nul=False)
            raise ValueError(f"{found[0]}: {found[1]}" if found else "tasks cannot be sent as JSON") from None
        return self


def _with_ids(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    numbered: list[dict[str, Any]] = []
    seen: set[int] = set()
    for index, task in enumerate(tasks):
        task_id = task.get("id")
        if task_id is None:
            task = {**task, "id": index}
            task_id = index
        elif isinstance(task_id, bool) or not isinstance(task_id, int):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"tasks[{index}].id must be an integer")
        if task_id in seen:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"tasks[{index}].id {task_id} is not unique")
        seen.add(task_id)
        numbered.append(task)
    return numbered


async def public_predict(body: PublicPredictRequest, request: Request) -> Response:
    """Predictions from a stored backend for the given tasks, checked against its project's label config;
    nothing is stored. The backend must be in the caller's reach (404 otherwise)."""
    settings: GatewaySettings = request.app.state.settings
    gateway: BackendGateway = request.app.state.gateway
    if len(body.tasks) > settings.public_max_tasks:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"tasks: at most {settings.public_max_tasks} tasks per request, got {len(body.tasks)}",
        )
    tasks = _with_ids(body.tasks)
    token = _bearer(request, "token", "bearer")
    caller = None if _is_service_token(settings, token) else token
    targets: TargetResolver = request.app.state.targets
    target = await targets.resolve(body.backend, caller)
    result = await _predict(
        gateway,
        target.backend,
        target.project,
        tasks,
        body.context,
        body.interactive,
        max_response_bytes=settings.public_max_response_bytes,
    )
    return _json_response(result)


_API_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "The annotation API, which vouches for tokens and knows the backends, cannot be reached.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"detail": {"description": "What went wrong."}}}
            }
        },
    }
}

for _path, _documented in (("/predict", True), ("/predict/", False)):
    public.add_api_route(
        _path,
        public_predict,
        methods=["POST"],
        response_model=PredictTasksResult,
        responses=_API_UNAVAILABLE,
        include_in_schema=_documented,
        route_class_override=PublicLeanRoute,
    )
