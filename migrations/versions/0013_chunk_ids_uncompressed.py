"""a chunk's task ids are stored out of line without compression

Revision ID: 0013_chunk_ids_uncompressed
Revises: 0012_task_keys_per_statement

A chunk row holds its 1000 task ids (8 KB), past the size at which Postgres moves a value out of line; it
also tried to compress every one with pglz first, which cost it ~0.9 µs of CPU per planned task, for ids
that compress poorly and are written once and read a few times (``bench/README.md``). ``EXTERNAL`` keeps them
out of line, uncompressed. It only changes how new rows are stored: no table rewrite, instant.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013_chunk_ids_uncompressed"
down_revision: str | Sequence[str] | None = "0012_task_keys_per_statement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE job_chunk ALTER COLUMN task_ids SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE job_chunk ALTER COLUMN task_ids SET STORAGE EXTENDED")
