"""drop the index of prediction.ml_backend_id

Revision ID: 0010_prediction_backend_index
Revises: 0009_open_chunks

It served one statement: deleting a backend cleared ``ml_backend_id`` on each of its predictions. That
statement is gone (a prediction's backend reads only while the backend exists, predictions/repository.py),
and every other read of the column goes by task id, through
``ix_prediction_task_id_model_version_ml_backend_id``. Every stored prediction paid an entry in it, and
every delete's VACUUM a scan of it (issue 9).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_prediction_backend_index"
down_revision: str | Sequence[str] | None = "0009_open_chunks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_prediction_ml_backend_id", table_name="prediction")


def downgrade() -> None:
    op.create_index("ix_prediction_ml_backend_id", "prediction", ["ml_backend_id"], unique=False)
