"""model version history per backend; annotations by project, newest first

Revision ID: 0002_console
Revises: 0001
Create Date: 2026-12-02 14:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_console"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ml_backend_version",
        sa.Column("ml_backend_id", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column(
            "first_seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["ml_backend_id"],
            ["ml_backend.id"],
            name=op.f("fk_ml_backend_version_ml_backend_id_ml_backend"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ml_backend_id", "model_version", name=op.f("pk_ml_backend_version")),
    )
    # History from what is already stored: every version a backend predicted with, first seen at its
    # earliest prediction, and each backend's current version.
    op.execute(
        """
        INSERT INTO ml_backend_version (ml_backend_id, model_version, first_seen_at)
        SELECT ml_backend_id, model_version, min(created_at) FROM prediction
        WHERE ml_backend_id IS NOT NULL GROUP BY ml_backend_id, model_version
        """
    )
    op.execute(
        """
        INSERT INTO ml_backend_version (ml_backend_id, model_version, first_seen_at)
        SELECT id, model_version, NULL FROM ml_backend WHERE model_version <> ''
        ON CONFLICT DO NOTHING
        """
    )
    op.create_index("ix_annotation_project_id_id", "annotation", ["project_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_annotation_project_id_id", table_name="annotation")
    op.drop_table("ml_backend_version")
