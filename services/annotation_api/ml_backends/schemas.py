"""ML backend request and response bodies (Label Studio field names, plus our batching knobs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.annotation_api.ids import RowId, SerialId
from services.annotation_api.models import MlBackend, MlBackendState
from shared.json_types import JsonInt

READABLE_STATE = {
    MlBackendState.CONNECTED: "Connected",
    MlBackendState.DISCONNECTED: "Disconnected",
    MlBackendState.ERROR: "Error",
    MlBackendState.TRAINING: "Training",
    MlBackendState.PREDICTING: "Predicting",
}

AuthMethod = Literal["NONE", "BASIC_AUTH"]

EXTRA_PARAMS_MAX_DEPTH = 100
"""Deepest nesting of ``extra_params``: they travel inside other messages (a /setup body, the worker's
chunk lease and training start) whose readers stop near 200 levels, so they get half of that."""


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counted up to ``limit + 1`` (enough to refuse it)."""
    stack = [(value, 0)]
    deepest = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth <= limit:
                stack.extend((item, depth) for item in (node.values() if isinstance(node, dict) else node))
    return deepest


def extra_params_problem(value: dict[str, Any] | None) -> str | None:
    """Why ``extra_params`` could not be sent, or None (also for values stored before this check)."""
    if value is not None and _depth(value, EXTRA_PARAMS_MAX_DEPTH) > EXTRA_PARAMS_MAX_DEPTH:
        return (
            f"is nested deeper than {EXTRA_PARAMS_MAX_DEPTH} levels (it is sent to the backend inside "
            "other messages, which could then not be read)"
        )
    return None


def _check_extra_params(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if problem := extra_params_problem(value):
        raise ValueError(problem)
    return value


def _check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url.rstrip("/")


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host/x`` → (``http://host/x``, user, pw): a URL is shown to every user, so the
    credentials in it are kept as basic auth (encrypted) and the URL is stored without them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    netloc = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    password = None if parts.password is None else unquote(parts.password)
    return clean, unquote(parts.username or ""), password


class MlBackendEditable(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    title: str | None = Field(default=None, max_length=500, description="Its name, up to 500 characters.")
    description: str | None = Field(default=None, description="Free text.")
    is_interactive: bool | None = Field(
        default=None,
        description="Use it for interactive pre-annotation (`/interactive-annotating`); default false.",
    )
    auth_method: AuthMethod | None = Field(
        default=None,
        description="NONE (default) or BASIC_AUTH: how the backend is called; NONE drops stored credentials.",
    )
    basic_auth_user: str | None = Field(default=None, description="User for basic auth (with BASIC_AUTH).")
    basic_auth_pass: str | None = Field(
        default=None,
        description="Password for basic auth (with BASIC_AUTH); stored encrypted, never returned.",
    )
    extra_params: dict[str, Any] | None = Field(
        default=None,
        description=f"Sent to the backend's /setup as extra_params; at most {EXTRA_PARAMS_MAX_DEPTH} levels "
        "deep.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="Seconds a bulk /predict call may take, up to 3600; default 100.",
    )
    auto_update: bool | None = Field(
        default=None, description="Follow new model versions the backend reports; default true."
    )
    model_version: str | None = Field(
        default=None,
        description="Model version to start from; a version the backend reports when checked replaces it "
        "(on update, unless this field is in the same request).",
    )
    batch_size: JsonInt | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Tasks per /predict call in bulk prediction, 1 to 10000; default 32.",
    )
    max_concurrency: JsonInt | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Concurrent calls to this backend per worker, 1 to 256; default 4.",
    )

    _extra_params = field_validator("extra_params")(_check_extra_params)


class MlBackendCreate(MlBackendEditable):
    url: str = Field(
        description="The backend's base URL (http or https); credentials in it become basic auth. It is "
        "checked (/health, /setup) before the backend is saved."
    )
    project: SerialId = Field(description="The project it predicts for (project id).")

    _url = field_validator("url")(_check_url)

    @model_validator(mode="after")
    def _credentials_from_url(self) -> MlBackendCreate:
        _move_url_credentials(self)
        return self


class MlBackendUpdate(MlBackendEditable):
    """PATCH body: only the fields present change (``model_fields_set``)."""

    url: str | None = Field(
        default=None,
        description="The backend's base URL (http or https); credentials in it become basic auth. A new URL, "
        "auth or extra_params is checked before it is saved.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return None if url is None else _check_url(url)

    @model_validator(mode="after")
    def _credentials_from_url(self) -> MlBackendUpdate:
        _move_url_credentials(self)
        return self


def _move_url_credentials(body: MlBackendCreate | MlBackendUpdate) -> None:
    """Credentials in the URL become basic auth, unless the body sets basic auth itself."""
    if body.url is None:
        return
    body.url, user, password = split_credentials(body.url)
    if user is None and password is None:
        return
    if body.basic_auth_user is None and body.basic_auth_pass is None:
        body.basic_auth_user, body.basic_auth_pass = user, password
    if body.auth_method is None:
        body.auth_method = "BASIC_AUTH"
    body.model_fields_set.update({"basic_auth_user", "basic_auth_pass", "auth_method"})


class MlBackendOut(BaseModel):
    id: int = Field(description="ML backend id.")
    state: str = Field(description="CO (connected), DI (disconnected), ER (error), TR (training).")
    readable_state: str = Field(description="`state` in words.")
    is_interactive: bool = Field(description="Used for interactive pre-annotation.")
    url: str = Field(description="The backend's base URL.")
    error_message: str | None = Field(description="Why the last check failed, if it did.")
    title: str = Field(description="Its name.")
    auth_method: str = Field(description="NONE or BASIC_AUTH.")
    basic_auth_user: str | None = Field(description="User for basic auth.")
    basic_auth_pass_is_set: bool = Field(
        description="Whether a basic-auth password is stored (never returned)."
    )
    description: str = Field(description="Free text.")
    extra_params: dict[str, Any] | None = Field(description="Sent to the backend's /setup as extra_params.")
    model_version: str = Field(
        description="The version the backend reported last (predictions are tagged with it)."
    )
    timeout: float = Field(description="Seconds a bulk /predict call may take.")
    created_at: datetime = Field(description="Creation time.")
    updated_at: datetime = Field(description="Last change.")
    auto_update: bool = Field(description="Follow new model versions the backend reports.")
    project: int = Field(description="Its project.")
    batch_size: int = Field(description="Tasks per /predict call in bulk prediction.")
    max_concurrency: int = Field(description="Concurrent calls to this backend per worker.")

    @classmethod
    def of(cls, backend: MlBackend) -> MlBackendOut:
        return cls(
            id=backend.id,
            state=backend.state,
            readable_state=READABLE_STATE.get(MlBackendState(backend.state), backend.state),
            is_interactive=backend.is_interactive,
            url=backend.url,
            error_message=backend.error_message,
            title=backend.title,
            auth_method=backend.auth_method,
            basic_auth_user=backend.basic_auth_user,
            basic_auth_pass_is_set=bool(backend.basic_auth_pass),
            description=backend.description,
            extra_params=backend.extra_params,
            model_version=backend.model_version,
            timeout=backend.timeout,
            created_at=backend.created_at,
            updated_at=backend.updated_at,
            auto_update=backend.auto_update,
            project=backend.project_id,
            batch_size=backend.batch_size,
            max_concurrency=backend.max_concurrency,
        )


class InteractiveRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    task: RowId = Field(description="The task to predict (task id, in the backend's project).")
    context: dict[str, Any] | None = Field(
        default=None,
        description="The annotator's input (keypoints, a box, text …), passed to the backend's /predict.",
    )


class InteractiveOut(BaseModel):
    """``data`` on success, ``errors`` otherwise (Label Studio answers both with 200)."""

    data: dict[str, Any] | None = Field(
        default=None, description="The prediction: result, score, model_version."
    )
    errors: list[str] | None = Field(default=None, description="Why there is none.")


class VersionsOut(BaseModel):
    versions: list[str] = Field(description="Versions the backend offers (its current one).")
    message: str | None = Field(default=None, description="Why the list is empty, if it is.")


class VersionPerformance(BaseModel):
    model_version: str = Field(description="A model version the backend reported or predicted with.")
    first_seen_at: datetime | None = Field(
        description="When the API first saw the backend report this version (null: before history was kept)."
    )
    predictions: int = Field(description="Predictions of this version stored in the backend's project.")
    compared: int = Field(
        description="Recently annotated tasks whose prediction of this version was compared with a later "
        "annotation."
    )
    agreement: float | None = Field(
        description="Mean agreement over the compared tasks, 0 to 1; null when none could be compared."
    )


class PerformanceOut(BaseModel):
    backend: int = Field(description="The ML backend.")
    versions: list[VersionPerformance] = Field(description="Its model versions, oldest first.")
