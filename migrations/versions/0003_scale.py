"""scale: background jobs for deletes and planning, a deleting marker, autovacuum on the hot tables

Revision ID: 0003_scale
Revises: 0002_console
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_scale"
down_revision: str | Sequence[str] | None = "0002_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables that take large deletes and many updates: vacuum them after a few percent of churn rather than
# the default 20% (a million-row table would otherwise carry 200k dead rows before autovacuum starts).
_HOT_TABLES = ("task", "prediction", "annotation", "job_chunk", "outbox_event")
_AUTOVACUUM = (
    "autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000, "
    "autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02, "
    "autovacuum_vacuum_cost_delay = 0"
)
_AUTOVACUUM_KEYS = (
    "autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_insert_scale_factor, "
    "autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_delay"
)


def upgrade() -> None:
    op.add_column("project", sa.Column("deleting", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("job", sa.Column("step", sa.String(length=20), nullable=True))
    op.add_column(
        "job",
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
    )
    op.alter_column("job", "project_id", existing_type=sa.Integer(), nullable=True)
    op.drop_constraint(op.f("fk_job_project_id_project"), "job", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_job_project_id_project"), "job", "project", ["project_id"], ["id"], ondelete="SET NULL"
    )
    op.create_index(
        "ix_job_step_updated_at",
        "job",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("step IS NOT NULL"),
    )
    # A chunk's report counts land on its own row (no hot job/project row); the background folder adds
    # them to the job and project in batches. TRUE: nothing to fold (every chunk done before this).
    for column in ("done", "predicted", "skipped", "failed", "predictions"):
        op.add_column("job_chunk", sa.Column(column, sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "job_chunk",
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False),
    )
    op.add_column("job_chunk", sa.Column("folded", sa.Boolean(), server_default="true", nullable=False))
    op.create_index(
        "ix_job_chunk_job_id_unfolded",
        "job_chunk",
        ["job_id"],
        unique=False,
        postgresql_where=sa.text("NOT folded"),
    )
    for table in _HOT_TABLES:
        op.execute(f"ALTER TABLE {table} SET ({_AUTOVACUUM})")


def downgrade() -> None:
    for table in _HOT_TABLES:
        op.execute(f"ALTER TABLE {table} RESET ({_AUTOVACUUM_KEYS})")
    op.drop_index("ix_job_chunk_job_id_unfolded", table_name="job_chunk")
    for column in ("folded", "errors", "predictions", "failed", "skipped", "predicted", "done"):
        op.drop_column("job_chunk", column)
    op.drop_index("ix_job_step_updated_at", table_name="job")
    op.drop_constraint(op.f("fk_job_project_id_project"), "job", type_="foreignkey")
    op.execute("DELETE FROM job WHERE project_id IS NULL")
    op.create_foreign_key(
        op.f("fk_job_project_id_project"), "job", "project", ["project_id"], ["id"], ondelete="CASCADE"
    )
    op.alter_column("job", "project_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("job", "params")
    op.drop_column("job", "step")
    op.drop_column("project", "deleting")
