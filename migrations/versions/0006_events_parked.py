"""events: per-backend delivery failures of outbox events (attempts counted, poisoned events parked);
an index of unfinished jobs for the stuck-job watchdog

Revision ID: 0006_events
Revises: 0005_security

A row exists only while an event is in trouble for one backend: ``failing`` (the head of its queue,
attempts counted), ``parked`` (given up on after bounded attempts; the queue moved past it) or
``redrive`` (a parked event a user asked to send again).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_events"
down_revision: str | Sequence[str] | None = "0005_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_failure",
        sa.Column("ml_backend_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "first_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "last_failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ml_backend_id"], ["ml_backend.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["event_id"], ["outbox_event.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ml_backend_id", "event_id"),
    )
    op.create_index("ix_event_failure_event_id", "event_failure", ["event_id"])
    # The job watchdog's rounds read only unfinished jobs, however long the job history.
    op.create_index(
        "ix_job_unfinished_updated_at",
        "job",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_unfinished_updated_at", table_name="job")
    op.drop_index("ix_event_failure_event_id", table_name="event_failure")
    op.drop_table("event_failure")
