"""ML backends: connect (checked through the gateway), read, edit, re-check, interactive predict.

Reads never call the backend (Label Studio re-runs health + setup on every list, which makes pages slow
and flaky); a backend is checked on create, on a URL/auth change, on explicit validate, and by the
periodic monitor (``monitor.py``). A failed check stores nothing. No row is locked while the gateway
checks a backend (seconds, for a slow one), so event delivery to that backend never waits behind it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.auth.access import hidden, only_visible
from services.annotation_api.auth.service import ensure_backend_token
from services.annotation_api.db import release_transaction
from services.annotation_api.errors import BadRequest, NotFound
from services.annotation_api.events.repository import latest_event_id
from services.annotation_api.jobs.watchdog import fail_backend_jobs
from services.annotation_api.ml_backends.gateway_client import GatewayClient
from services.annotation_api.ml_backends.schemas import (
    InteractiveOut,
    InteractiveRequest,
    MlBackendCreate,
    MlBackendUpdate,
    VersionsOut,
)
from services.annotation_api.models import (
    MlBackend,
    MlBackendState,
    Project,
    Task,
)
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import (
    BackendSpec,
    CheckBackendRequest,
    CheckBackendResult,
    CheckFailure,
    PredictTasksRequest,
    ProjectRef,
)

_FAILURE_PREFIX = {
    CheckFailure.POLICY: "ML backend address not allowed by the gateway's address policy",
    CheckFailure.DNS: "Can't resolve the ML backend host (DNS)",
    CheckFailure.REFUSED: "Can't connect to the ML backend (unreachable or connection refused)",
    CheckFailure.TIMEOUT: "ML backend timed out",
    CheckFailure.UNAUTHORIZED: "ML backend answered 401 Unauthorized (check basic auth credentials)",
    CheckFailure.BAD_RESPONSE: "ML backend sent a malformed response (bad JSON or wrong shape)",
    CheckFailure.BACKEND_ERROR: "ML backend answered with an error",
    CheckFailure.NO_MODEL_VERSION: "ML backend reported no model version in /setup",
}
# Failures that mean "cannot reach it" (Disconnected) rather than "it answered wrongly" (Error).
_DISCONNECTED = frozenset({CheckFailure.POLICY, CheckFailure.DNS, CheckFailure.REFUSED, CheckFailure.TIMEOUT})
_CHECK_FIELDS = frozenset({"url", "auth_method", "basic_auth_user", "basic_auth_pass", "extra_params"})


def backend_spec(backend: MlBackend) -> BackendSpec:
    return BackendSpec(
        id=backend.id,
        url=backend.url,
        auth_method="BASIC_AUTH" if backend.auth_method == "BASIC_AUTH" else "NONE",
        basic_auth_user=backend.basic_auth_user,
        basic_auth_pass=backend.basic_auth_pass,
        extra_params=backend.extra_params,
        timeout_s=backend.timeout,
        batch_size=backend.batch_size,
        max_concurrency=backend.max_concurrency,
        model_version=backend.model_version or None,
    )


def project_ref(project: Project) -> ProjectRef:
    return ProjectRef(
        id=project.id,
        created_at_ts=int(project.created_at.timestamp()),
        label_config=project.label_config,
    )


def failure_message(result: CheckBackendResult) -> str:
    prefix = _FAILURE_PREFIX.get(result.failure, "ML backend check failed") if result.failure else None
    parts = [part for part in (prefix, result.error) if part]
    return ": ".join(parts) or "ML backend check failed"


async def backend_access_token(session: AsyncSession, settings: ApiSettings, backend: MlBackend) -> str:
    """The API token sent to a backend in /setup, so it can fetch its project's task data and media.

    Scoped to the backend's project (read-only, ``auth/access.py``) and to the backend itself: deleting
    the backend deletes it, and a new ``access_token_salt`` (``cli rotate-backend-token``) revokes it.
    Derived from the service token and the salt (HMAC), so the API never stores it in clear yet can send
    it again on every check. Without a service token there is no secret to derive from, and none is sent.
    """
    if not settings.service_token:
        return ""
    if not backend.access_token_salt:
        backend.access_token_salt = secrets.token_hex(16)
    key = hmac.new(
        settings.service_token.encode(), f"ml-backend:{backend.access_token_salt}".encode(), hashlib.sha256
    ).hexdigest()[:40]
    if backend.id is not None:
        await ensure_backend_token(session, backend.id, backend.project_id, key)
    return key


async def get_project(session: AsyncSession, project_id: int) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


_RECORD_VERSIONS = text(
    "INSERT INTO ml_backend_version (ml_backend_id, model_version)"
    " SELECT :backend, v FROM unnest(CAST(:versions AS text[])) AS v ON CONFLICT DO NOTHING"
)


async def record_versions(session: AsyncSession, backend_id: int, versions: Iterable[str | None]) -> None:
    """Remember when each of the backend's versions was first seen (its history); seeing one again changes
    nothing. One statement however many versions: a chunk report records its predictions' versions
    with it, where an ORM insert per version cost the API ~0.5 ms of CPU per chunk."""
    # set() first, in C: a report's thousand versions are nearly always one.
    known = sorted(version for version in set(versions) if version)
    if known:
        await session.execute(_RECORD_VERSIONS, {"backend": backend_id, "versions": known})


async def get_backend(session: AsyncSession, backend_id: int) -> MlBackend:
    backend = await session.get(MlBackend, backend_id)
    if backend is None:
        raise NotFound(f"ML backend {backend_id} not found.")
    return backend


async def run_check(
    session: AsyncSession,
    gateway: GatewayClient,
    settings: ApiSettings,
    backend: MlBackend,
    project: Project,
) -> CheckBackendResult:
    """Check through the gateway with no transaction open (``release_transaction``): ``backend`` must
    hold no unsaved change, and what is written afterwards is re-read with ``locked_again``."""
    request = CheckBackendRequest(
        backend=backend_spec(backend),
        project=project_ref(project),
        hostname=settings.public_url,
        access_token=await backend_access_token(session, settings, backend),
    )
    await release_transaction(session)
    return await gateway.check(request)


async def locked_again(session: AsyncSession, backend_id: int) -> MlBackend:
    """The backend re-read and locked after a remote call; a 404 saying so if it was deleted meanwhile."""
    backend = await session.get(
        MlBackend, backend_id, populate_existing=True, with_for_update={"key_share": True}
    )
    if backend is None:
        raise NotFound(f"ML backend {backend_id} was deleted while the gateway was checking it.")
    return backend


def _unsaved_copy(backend: MlBackend) -> MlBackend:
    """A transient copy to try changes on: the row itself stays untouched until the check passed."""
    columns = inspect(MlBackend).column_attrs
    return MlBackend(**{column.key: getattr(backend, column.key) for column in columns})


def _reject(result: CheckBackendResult) -> BadRequest:
    message = failure_message(result)
    return BadRequest(message, extra={"non_field_errors": [message]})


async def create_backend(
    session: AsyncSession, gateway: GatewayClient, settings: ApiSettings, body: MlBackendCreate
) -> MlBackend:
    project = await session.get(Project, body.project)
    if project is None or await hidden(session, "project_id", body.project):
        raise BadRequest(f'Invalid pk "{body.project}" - object does not exist.', field="project")
    values: dict[str, Any] = body.model_dump(exclude_none=True)
    values["project_id"] = values.pop("project")
    if values.get("auth_method", "NONE") == "NONE":
        values.pop("basic_auth_user", None)
        values.pop("basic_auth_pass", None)
    backend = MlBackend(**values)
    backend.timeout = body.timeout or 100.0
    backend.batch_size = body.batch_size or 32
    backend.max_concurrency = body.max_concurrency or 4
    backend.model_version = body.model_version or ""
    result = await run_check(session, gateway, settings, backend, project)
    if not result.ok:
        raise _reject(result)
    backend.state = MlBackendState.CONNECTED
    backend.error_message = None
    backend.model_version = result.model_version or backend.model_version
    backend.last_checked_at = func.now()
    # Events are delivered from now on, not the project's whole history.
    backend.last_event_id = await latest_event_id(session, project.id)
    session.add(backend)
    await session.flush()
    await backend_access_token(session, settings, backend)
    if backend.model_version:
        # Conditional, not read-modify-write: the project row is not locked during the slow check.
        await session.execute(
            update(Project)
            .where(Project.id == project.id, Project.model_version == "")
            .values(model_version=backend.model_version)
        )
    await session.flush()
    await record_versions(session, backend.id, [backend.model_version])
    await session.refresh(backend)
    return backend


async def list_backends(
    session: AsyncSession, project_id: int | None, is_interactive: bool | None
) -> list[MlBackend]:
    stmt = select(MlBackend).order_by(MlBackend.id)
    visible = only_visible(session, MlBackend.project_id)
    if visible is not None:
        stmt = stmt.where(visible)
    if project_id is not None:
        stmt = stmt.where(MlBackend.project_id == project_id)
    if is_interactive is not None:
        stmt = stmt.where(MlBackend.is_interactive == is_interactive)
    return list((await session.execute(stmt)).scalars())


async def update_backend(
    session: AsyncSession,
    gateway: GatewayClient,
    settings: ApiSettings,
    backend_id: int,
    body: MlBackendUpdate,
) -> MlBackend:
    backend = await get_backend(session, backend_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    for name in ("title", "description", "is_interactive", "timeout", "auto_update", "url"):
        if name in changes and changes[name] is None:
            raise BadRequest("This field may not be null.", field=name)
    for name in ("batch_size", "max_concurrency", "auth_method", "model_version"):
        if name in changes and changes[name] is None:
            changes.pop(name)
    result = None
    if _CHECK_FIELDS & changes.keys():
        candidate = _with_changes(_unsaved_copy(backend), changes)
        project = await get_project(session, backend.project_id)
        result = await run_check(session, gateway, settings, candidate, project)
        if not result.ok:
            raise _reject(result)
        backend = await locked_again(session, backend_id)
    _with_changes(backend, changes)
    if result is not None:
        backend.state = MlBackendState.CONNECTED
        backend.error_message = None
        if result.model_version and "model_version" not in changes:
            backend.model_version = result.model_version
    await session.flush()
    await record_versions(session, backend.id, [backend.model_version])
    await session.refresh(backend)
    return backend


def _with_changes(backend: MlBackend, changes: dict[str, Any]) -> MlBackend:
    for name, value in changes.items():
        setattr(backend, name, value)
    if backend.auth_method == "NONE":
        backend.basic_auth_user = backend.basic_auth_pass = None
    return backend


async def delete_backend(session: AsyncSession, backend_id: int) -> None:
    """Delete the backend; its queued and running jobs (training, predictions) fail at once, named so.

    Its predictions stay and show no backend from now on (``PREDICTION_COLUMNS`` reads the id only while
    the backend exists), so the request writes none of them however many there are. Deleting the row waits
    for chunk reports storing this backend's predictions (each holds the row, ``repo.hold_backend``); later
    reports find the backend gone.
    """
    backend = await get_backend(session, backend_id)
    await fail_backend_jobs(session, backend_id)
    await session.delete(backend)
    await session.flush()


async def validate_backend(
    session: AsyncSession, gateway: GatewayClient, settings: ApiSettings, backend_id: int
) -> MlBackend:
    """Explicit re-check, recorded on the backend: its ``state`` and ``error_message`` tell the outcome."""
    backend = await get_backend(session, backend_id)
    project = await get_project(session, backend.project_id)
    result = await run_check(session, gateway, settings, backend, project)
    backend = await locked_again(session, backend_id)
    await apply_check_result(session, backend, project, result)
    await session.flush()
    await session.refresh(backend)
    return backend


async def apply_check_result(
    session: AsyncSession, backend: MlBackend, project: Project, result: CheckBackendResult
) -> None:
    """Record a check on the backend row; follow a new model version when auto-update is on."""
    if not result.ok:
        failure = result.failure
        backend.state = MlBackendState.DISCONNECTED if failure in _DISCONNECTED else MlBackendState.ERROR
        backend.error_message = failure_message(result)
    else:
        backend.state = MlBackendState.CONNECTED
        backend.error_message = None
        if result.model_version:
            await follow_model_version(session, backend, project.id, result.model_version)
    backend.last_checked_at = func.now()


async def follow_model_version(
    session: AsyncSession, backend: MlBackend, project_id: int, version: str
) -> None:
    """The backend reported ``version`` (a check, training, or predictions it returned): record it when
    auto-update is on (or none was known), and move the project's shown version if it followed the backend.
    Every reported version enters the backend's history, whether it is followed or not."""
    await record_versions(session, backend.id, [version])
    old_version = backend.model_version
    if version != old_version and (backend.auto_update or not old_version):
        backend.model_version = version
        # Annotators keep seeing this backend's predictions when the project followed it.
        await session.execute(
            update(Project)
            .where(Project.id == project_id, Project.model_version.in_([old_version, ""]))
            .values(model_version=version)
        )


def _task_for_backend(task: Task) -> dict[str, Any]:
    return {"id": task.id, "data": task.data, "meta": task.meta, "project": task.project_id}


async def interactive_annotating(
    session: AsyncSession, gateway: GatewayClient, backend_id: int, body: InteractiveRequest
) -> InteractiveOut:
    backend = await get_backend(session, backend_id)
    task = await session.get(Task, body.task)
    if task is None or task.project_id != backend.project_id:
        raise NotFound(f"Task {body.task} not found in the backend's project.")
    if not backend.is_interactive:
        return InteractiveOut(errors=["Model is not set to be used for interactive preannotations"])
    project = await get_project(session, backend.project_id)
    await release_transaction(session)  # nothing is written after the call
    result = await gateway.predict(
        PredictTasksRequest(
            backend=backend_spec(backend),
            project=project_ref(project),
            tasks=[_task_for_backend(task)],
            context=body.context,
            interactive=True,
        )
    )
    if result.errors:
        return InteractiveOut(errors=[error.message for error in result.errors])
    if not result.predictions:
        return InteractiveOut(data=None)
    first = result.predictions[0]
    return InteractiveOut(
        data={"result": first.result, "score": first.score, "model_version": first.model_version}
    )


async def versions(session: AsyncSession, backend_id: int) -> VersionsOut:
    backend = await get_backend(session, backend_id)
    if not backend.model_version:
        return VersionsOut(versions=[], message="The backend has not reported a model version yet.")
    return VersionsOut(versions=[backend.model_version])
