"""The contract between the annotation API and the model gateway (both directions, over HTTP).

The API owns every durable fact and sends the gateway everything a backend call needs (``BackendSpec``,
``ProjectRef``), so gateways and workers keep no state of their own and scale freely. Routes:

API → gateway (service token):
- ``POST /internal/backends/check``  ``CheckBackendRequest`` → ``CheckBackendResult``
- ``POST /internal/predict``         ``PredictTasksRequest`` → ``PredictTasksResult`` (not stored)
- ``POST /internal/webhook``         ``WebhookRequest`` → ``WebhookResult``

gateway → API (service token):
- ``POST /internal/predict-targets``  ``PredictTargetRequest`` → ``PredictTarget`` (a stored backend and its
  project, for the public ``POST /api/predict``; the caller's token decides what it may reach)

gateway worker → API (service token):
- ``POST /internal/chunks/{chunk_id}/lease``    → ``ChunkLease`` (tasks still to predict, or done/cancelled)
- ``POST /internal/chunks/{chunk_id}/heartbeat`` → ``ChunkHeartbeat`` (extends the lease while working)
- ``POST /internal/chunks/{chunk_id}/complete`` ``ChunkReport`` → ``ChunkAck`` (exactly-once write; each
  result travels as JSON text the API stores as it is, see ``ReportedPrediction``)
- ``POST /internal/chunks/{chunk_id}/release``  → ``ChunkRelease`` (a stopping worker hands it back,
  the attempt not counted)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

MAX_BACKEND_TIMEOUT_S = 3600.0
"""The longest per-attempt timeout a backend may be given (the API's limit on a backend's ``timeout``);
the worker's job timeout is derived from it so a job is never killed while a call may still answer."""


class BackendSpec(BaseModel):
    """Everything needed to call one ML backend; the gateway never looks it up itself."""

    id: int | None = None
    url: str
    auth_method: Literal["NONE", "BASIC_AUTH"] = "NONE"
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = Field(default=None, repr=False)
    extra_params: dict[str, Any] | None = None
    timeout_s: float = Field(
        default=100.0, gt=0, le=MAX_BACKEND_TIMEOUT_S, description="Per-attempt read timeout of /predict."
    )
    batch_size: int = Field(default=32, ge=1)
    max_concurrency: int = Field(default=4, ge=1)
    model_version: str | None = Field(default=None, description="Version /setup reported, if known.")


class ProjectRef(BaseModel):
    id: int
    created_at_ts: int = Field(description="Unix time the project was created; forms `<id>.<ts>`.")
    label_config: str

    @property
    def protocol_id(self) -> str:
        """The project string the Label Studio ML protocol uses."""
        return f"{self.id}.{self.created_at_ts}"


class CheckFailure(StrEnum):
    POLICY = "policy"
    DNS = "dns"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNAUTHORIZED = "unauthorized"
    BAD_RESPONSE = "bad_response"
    BACKEND_ERROR = "backend_error"
    NO_MODEL_VERSION = "no_model_version"


class CheckBackendRequest(BaseModel):
    backend: BackendSpec
    project: ProjectRef
    hostname: str = Field(description="URL of the annotation API, sent in /setup.")
    access_token: str = Field(default="", repr=False)


class CheckBackendResult(BaseModel):
    ok: bool
    model_version: str | None = None
    model_class: str | None = None
    failure: CheckFailure | None = None
    error: str | None = None


class TaskPrediction(BaseModel):
    task_id: int = Field(description="The task's id.")
    result: list[Any] = Field(description="Regions, validated against the label config.")
    score: float | None = Field(default=None, description="The model's confidence, if given.")
    model_version: str = Field(description="The version the backend tagged it with.")


class TaskError(BaseModel):
    task_id: int = Field(description="The task's id.")
    message: str = Field(description="Why it has no prediction.")


class PredictTasksRequest(BaseModel):
    backend: BackendSpec
    project: ProjectRef
    tasks: list[dict[str, Any]] = Field(description="Task objects as the backend sees them: id, data, …")
    context: dict[str, Any] | None = None
    interactive: bool = Field(default=False, description="Tight timeouts, no retries.")


class PredictTasksResult(BaseModel):
    predictions: list[TaskPrediction] = Field(
        default=[], description="One per task the backend predicted, in task order."
    )
    errors: list[TaskError] = Field(default=[], description="Tasks without a prediction, and why.")
    model_version: str | None = Field(
        default=None, description="The version every prediction carries; null when they differ."
    )


class PredictTargetRequest(BaseModel):
    backend_id: int = Field(ge=1, le=2**31 - 1, description="The stored ML backend's id.")
    token: str | None = Field(
        default=None,
        repr=False,
        description="The public caller's API token: the backend must be in its reach. Null for the service token.",
    )


class PredictTarget(BaseModel):
    backend: BackendSpec = Field(description="How to call the backend.")
    project: ProjectRef = Field(description="Its project: the label config predictions must fit.")


class ChunkLease(BaseModel):
    chunk_id: int
    job_id: int
    status: Literal["leased", "done", "cancelled"]
    backend: BackendSpec | None = None
    project: ProjectRef | None = None
    tasks: list[dict[str, Any]] = []
    skipped: int = Field(default=0, description="Tasks that already had this backend's version.")
    lease_s: float | None = Field(
        default=None, description="How long the lease lasts; heartbeat well within it to keep it."
    )


class ChunkHeartbeat(BaseModel):
    status: Literal["leased", "done", "cancelled"]


class ChunkRelease(BaseModel):
    released: bool = Field(
        description="False when the chunk was no longer leased (done, cancelled or pending)."
    )


ResultText = Annotated[
    str, Field(pattern=r"^[ \t\n\r]*\[", json_schema_extra={"contentMediaType": "application/json"})
]


class ReportedPredictions(BaseModel):
    """A chunk's predictions as the worker reports them, in columns: the ``n``-th entry of each list is the
    ``n``-th prediction's. Each result is already validated against the label config and written as JSON.

    The API stores each ``results`` text into the jsonb column as it is (Postgres checks its syntax),
    instead of parsing every region into Python objects and encoding them again; a text Postgres refuses
    fails the whole report with a 400 naming it. Columns, not an object per prediction: a thousand objects
    cost the API more to read than everything else in a report.
    """

    task_ids: list[int] = Field(default=[], description="The task of each prediction.")
    results: list[ResultText] = Field(
        default=[],
        description="The regions of each (a JSON array, validated against the label config by the gateway) as JSON text.",
    )
    scores: list[float | None] = Field(default=[], description="The model's confidence in each, if given.")
    model_versions: list[str] | None = Field(
        default=None,
        description="The version the backend tagged each with; null when all have the report's model_version.",
    )


class ChunkReport(BaseModel):
    predictions: ReportedPredictions = ReportedPredictions()
    errors: list[TaskError] = []
    model_version: str | None = Field(
        default=None,
        description="The version every prediction has; null when they differ (or there are none).",
    )
    sent: list[int] | None = Field(
        default=None,
        description="Ids of the tasks the lease gave the worker; the chunk's others count as skipped.",
    )


class ChunkAck(BaseModel):
    accepted: bool
    job_status: str


class WebhookRequest(BaseModel):
    backend: BackendSpec
    payload: dict[str, Any]
    legacy_train: bool = Field(default=False, description="Use 1.0.x POST /train for START_TRAINING.")


class WebhookResult(BaseModel):
    ok: bool
    status_code: int | None = None
    body: Any = None
    error: str | None = None
    unsendable: bool = Field(
        default=False, description="The event itself cannot be sent (not encodable as JSON): no retry helps."
    )
