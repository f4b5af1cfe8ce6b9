"""a partial index on a job's chunks not yet reported

Revision ID: 0009_open_chunks
Revises: 0008_parent_prediction

Every chunk report asks whether its job has a chunk left to report. By ``job_id`` alone, Postgres read
each of the job's chunks already done before finding one that is not: about a thousand per report half
way through a million-task job, so the question grew quadratically with the job (issue 9). This index
holds only the chunks left, so the answer reads at most a few.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_open_chunks"
down_revision: str | Sequence[str] | None = "0008_parent_prediction"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_job_chunk_job_id_open",
        "job_chunk",
        ["job_id"],
        unique=False,
        postgresql_where=sa.text("status NOT IN ('done', 'cancelled')"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_chunk_job_id_open", table_name="job_chunk")
