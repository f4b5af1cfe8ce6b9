"""a deployment id: which labelloop deployment a database belongs to

Revision ID: 0011_deployment
Revises: 0010_prediction_backend_index

One row, a random id made when the database is migrated for the first time. Every API process of the
deployment reads it and claims its Redis database with it (``services/annotation_api/redis_claim.py``), so two
deployments given one Redis database, whose workers would take each other's jobs, are told apart.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_deployment"
down_revision: str | Sequence[str] | None = "0010_prediction_backend_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column(
            "id", postgresql.UUID(as_uuid=True), server_default=sa.text("gen_random_uuid()"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment")),
    )
    op.execute("INSERT INTO deployment DEFAULT VALUES")


def downgrade() -> None:
    op.drop_table("deployment")
