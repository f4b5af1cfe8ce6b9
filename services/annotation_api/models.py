"""The annotation API's tables: the durable record of everything labelloop knows.

Counters that pages show (task_number, total_annotations, …) are columns maintained by set-based
statements in the services, so listing never counts millions of rows; a task's ``total_predictions`` is
counted when read (a few index entries per task). Relationships are
``lazy="raise"``: an accidental N+1 query fails loudly instead of silently slowing a page down.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

from services.annotation_api.secret_box import EncryptedText

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


TASK_REFERENCE = (
    "Its task, kept by statement-level triggers instead of a foreign key (migration 0012): an insert locks "
    "its tasks and fails on a missing one with the key's error, a task delete takes the rows with it."
)
"""A foreign key's triggers run a query per row: one check per bulk-predicted task, three cascades per
deleted task. The triggers do the same once per statement (``migrations/versions/0012_…``)."""


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _updated() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Deployment(Base):
    """One row: the id this database's deployment claims its Redis database with (``redis_claim``)."""

    __tablename__ = "deployment"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, server_default=text("gen_random_uuid()"))
    created_at: Mapped[datetime] = _created()


class Organization(Base):
    """A tenant (as in Label Studio): its users' tokens reach its projects and everything in them only."""

    __tablename__ = "organization"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(254), default="", server_default="")
    created_at: Mapped[datetime] = _created()


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = _created()


class ApiToken(Base):
    """An API key, stored only as its SHA-256 digest (keys are 160-bit random, so no salt is needed).

    A token with ``project_id`` is an ML backend's: it reads that project's tasks and annotations only
    (``auth/access.py``), and goes away with its backend (``ml_backend_id``, cascading).
    """

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    key_digest: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    ml_backend_id: Mapped[int | None] = mapped_column(
        ForeignKey("ml_backend.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = _created()


class Project(Base):
    __tablename__ = "project"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(250), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    label_config: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text, default="", server_default="")
    sampling: Mapped[str] = mapped_column(
        String(40), default="Sequential sampling", server_default="Sequential sampling"
    )
    show_collab_predictions: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    evaluate_predictions_automatically: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="false"
    )
    repredict_on_new_version: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), index=True
    )
    task_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_annotations_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_predictions_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    num_tasks_with_annotations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    deleting: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="false", doc="A delete job runs: hidden from every read."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Prediction(Base):
    """Every bulk-predicted task inserts one, so each index and foreign key here is paid per task: only
    what reads and deletes need (migrations 0007_lean_predictions, 0010 and 0012 say why each of the others
    went; ``make bench-insert`` prices them)."""

    __tablename__ = "prediction"
    __table_args__ = (
        Index("ix_prediction_project_id_model_version_score", "project_id", "model_version", "score"),
        # Every by-task lookup, with or without a version; covers what the chunk statements read.
        Index(
            "ix_prediction_task_id_model_version_ml_backend_id",
            "task_id",
            "model_version",
            "ml_backend_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, doc=TASK_REFERENCE)
    project_id: Mapped[int] = mapped_column(
        Integer, doc="Its task's project (no foreign key: it goes with its task, see ``task_id``)."
    )
    result: Mapped[list[Any]] = mapped_column(JSONB)
    score: Mapped[float | None] = mapped_column(Double)
    model_version: Mapped[str] = mapped_column(Text, default="undefined", server_default="undefined")
    ml_backend_id: Mapped[int | None] = mapped_column(
        Integer,
        doc="The backend that predicted it, as written (no foreign key); read only while that backend exists.",
    )
    job_id: Mapped[int | None] = mapped_column(
        BigInteger, doc="The job that stored it (no foreign key: jobs go only after their project's tasks)."
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class Task(Base):
    __tablename__ = "task"
    __table_args__ = (
        Index("ix_task_project_id_id", "project_id", "id"),
        # The label stream's walk over unlabeled tasks, which stays short however many are labeled.
        Index("ix_task_project_id_id_unlabeled", "project_id", "id", postgresql_where=text("NOT is_labeled")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    is_labeled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    total_annotations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancelled_annotations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    # Counted when read (an index-only count on the prediction index that leads with task_id), not kept
    # on the task row: bulk prediction then writes no task row, where a counter column cost every
    # predicted task a new row version with its index entries, and the vacuum of the old one (issue 9).
    # Raw SQL reads use ``TASK_PREDICTIONS`` (tasks/repository.py).
    legacy_total_predictions: Mapped[int] = mapped_column(
        "total_predictions",
        Integer,
        default=0,
        server_default="0",
        deferred=True,
        doc="Not kept since migration 0007; read only by the previous release during an upgrade, dropped by "
        "the next release's migration.",
    )
    total_predictions: Mapped[int] = column_property(
        select(func.count()).where(Prediction.task_id == id).correlate_except(Prediction).scalar_subquery()
    )


class Annotation(Base):
    __tablename__ = "annotation"
    # The project's most recent annotations, newest first: the bounded window model performance reads.
    __table_args__ = (Index("ix_annotation_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True, doc=TASK_REFERENCE)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    result: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    was_cancelled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    ground_truth: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    lead_time: Mapped[float | None] = mapped_column(Double)
    completed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))
    parent_prediction_id: Mapped[int | None] = mapped_column(
        BigInteger,
        doc="The prediction it started from, as written (no foreign key); read through ``parent_prediction``.",
    )
    # Shown only while the prediction exists, which is what Label Studio's ``ON DELETE SET NULL`` shows,
    # with no write when predictions are deleted: the key's action ran one query per deleted prediction and
    # then rewrote each annotation made from one (issue 9). Prediction ids are never reused.
    parent_prediction: Mapped[int | None] = column_property(
        select(Prediction.id)
        .where(Prediction.id == parent_prediction_id)
        .correlate_except(Prediction)
        .scalar_subquery()
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class MlBackendState(enum.StrEnum):
    CONNECTED = "CO"
    DISCONNECTED = "DI"
    ERROR = "ER"
    TRAINING = "TR"
    PREDICTING = "PR"


class MlBackend(Base):
    __tablename__ = "ml_backend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(String(500), default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    auth_method: Mapped[str] = mapped_column(String(20), default="NONE", server_default="NONE")
    basic_auth_user: Mapped[str | None] = mapped_column(Text)
    basic_auth_pass: Mapped[str | None] = mapped_column(EncryptedText, doc="Fernet ciphertext in the table.")
    extra_params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    timeout: Mapped[float] = mapped_column(Double, default=100.0, server_default="100")
    batch_size: Mapped[int] = mapped_column(Integer, default=32, server_default="32")
    max_concurrency: Mapped[int] = mapped_column(Integer, default=4, server_default="4")
    auto_update: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    is_interactive: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    state: Mapped[str] = mapped_column(String(2), default="DI", server_default="DI")
    model_version: Mapped[str] = mapped_column(Text, default="", server_default="")
    error_message: Mapped[str | None] = mapped_column(Text)
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_event_id: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", doc="Outbox cursor: last event delivered."
    )
    access_token_salt: Mapped[str] = mapped_column(
        String(32),
        server_default=text("md5(random()::text)"),
        doc="Input of the backend's access token (HMAC); a new salt revokes the old token.",
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class MlBackendVersion(Base):
    """When the API first saw a backend report a model version: the backend's history over time."""

    __tablename__ = "ml_backend_version"

    ml_backend_id: Mapped[int] = mapped_column(
        ForeignKey("ml_backend.id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    first_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), server_default=func.now())


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Job(Base):
    """A unit of background work the user can follow: bulk prediction, training, deletes, auto-labeling."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_step_updated_at", "updated_at", postgresql_where=text("step IS NOT NULL")),
        Index(
            "ix_job_unfinished_updated_at",
            "updated_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("project.id", ondelete="SET NULL"), index=True, doc="NULL once a deleted project is gone."
    )
    ml_backend_id: Mapped[int | None] = mapped_column(
        ForeignKey("ml_backend.id", ondelete="SET NULL"), index=True
    )
    model_version: Mapped[str | None] = mapped_column(Text)
    selection: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    status: Mapped[str] = mapped_column(String(20), default="queued", server_default="queued")
    total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    predicted: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Done tasks that got at least one prediction."
    )
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    errors: Mapped[list[Any]] = mapped_column(JSONB, default=list, server_default="[]")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[str | None] = mapped_column(
        String(20), doc="What the API's job runner still has to do (plan, work, vacuum); NULL: nothing."
    )
    params: Mapped[dict[str, Any]] = mapped_column(
        JSONB, default=dict, server_default="{}", doc="The runner's input and cursor; not shown to clients."
    )
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _updated()


class JobChunk(Base):
    """A slice of a job's tasks; the unit a worker leases, and the unit of exactly-once writes."""

    __tablename__ = "job_chunk"
    __table_args__ = (
        Index("ix_job_chunk_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_job_chunk_job_id_unfolded", "job_id", postgresql_where=text("NOT folded")),
        # A job's chunks still to report: finding whether any is left reads those, not every done one.
        Index(
            "ix_job_chunk_job_id_open", "job_id", postgresql_where=text("status NOT IN ('done', 'cancelled')")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    task_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger),
        doc="Stored out of line uncompressed (migration 0013): written once, read a few times.",
    )
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending")
    """pending, leased, done or cancelled: the lease cycle, moved by the SQL in jobs/."""
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The report's counts, on the chunk's own row so concurrent completions share no row; the folder
    # (``jobs/repository.fold_chunks``) adds them to the job and project, and reads add what is unfolded.
    done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    predicted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    predictions: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Predictions stored (the project's counter)."
    )
    errors: Mapped[list[Any]] = mapped_column(JSONB, default=list, server_default="[]")
    folded: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default="true", doc="False while its counts are not in the job's."
    )


class OutboxEvent(Base):
    """Annotation events written in the annotation's own transaction, delivered later to backends."""

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_project_id_id", "project_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created()


class EventFailure(Base):
    """An outbox event in trouble for one backend: ``failing`` (its queue's head, attempts counted),
    ``parked`` (given up on, the queue moved past it) or ``redrive`` (parked, to be sent again)."""

    __tablename__ = "event_failure"

    ml_backend_id: Mapped[int] = mapped_column(
        ForeignKey("ml_backend.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbox_event.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    state: Mapped[str] = mapped_column(String(10))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    first_failed_at: Mapped[datetime] = _created()
    last_failed_at: Mapped[datetime] = _created()
    parked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TaskLock(Base):
    """A short claim on a task served by /next, so two annotators do not label it at once."""

    __tablename__ = "task_lock"

    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, doc=TASK_REFERENCE)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
