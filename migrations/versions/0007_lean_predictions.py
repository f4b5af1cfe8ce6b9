"""lean predictions: fewer indexes and foreign-key checks per stored prediction; task prediction
counts derived

Revision ID: 0007_lean_predictions
Revises: 0006_events

Every bulk-predicted task inserts a prediction row, so each index and each foreign key of the table is
paid once per task (issue 9). Kept: what a read or a delete needs.

- ``(task_id, model_version)`` and ``(task_id, ml_backend_id, model_version)`` become one
  ``(task_id, model_version, ml_backend_id)``: it serves every by-task lookup, with or without a version,
  and holds all three columns the chunk statements read by task id (index-only).
- The project foreign key goes: a prediction's project is its task's (every writer takes it from the
  task), and its task's foreign key already deletes it with the task, which a project delete removes
  first. Its check took ``FOR KEY SHARE`` on the one project row from every concurrent chunk.
- The backend foreign key goes (its index stays): a chunk holds its backend's row once (``FOR KEY
  SHARE``, jobs/service.py) instead of once per prediction, and deleting a backend clears the
  ``ml_backend_id`` of its predictions itself (ml_backends/service.py), as the key's ``SET NULL`` did.
  Its check took the same row lock from every concurrent chunk, one multixact after another.
- The job foreign key and its index go: ``job_id`` records which job stored a prediction, and job rows
  are deleted only by their project's delete, after its tasks (and so its predictions) are gone. The
  index existed only for the key's ``ON DELETE SET NULL``.
- ``task.total_predictions`` is no longer kept: a task's predictions are counted when it is read
  (models.py), so storing a prediction writes no task row (a lock, a new row version with its index entries,
  and the vacuum of the old one, per predicted task). The column itself stays until the next release's
  migration drops it (expand/contract, README "Upgrading"): the previous release's API pods, still serving
  during a rolling upgrade, read and update it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_lean_predictions"
down_revision: str | Sequence[str] | None = "0006_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_prediction_task_id_model_version_ml_backend_id",
        "prediction",
        ["task_id", "model_version", "ml_backend_id"],
        unique=False,
    )
    op.drop_index("ix_prediction_task_id_model_version", table_name="prediction")
    op.drop_index("ix_prediction_task_id_ml_backend_id_model_version", table_name="prediction")
    op.drop_constraint("fk_prediction_project_id_project", "prediction", type_="foreignkey")
    op.drop_constraint("fk_prediction_job_id_job", "prediction", type_="foreignkey")
    op.drop_constraint("fk_prediction_ml_backend_id_ml_backend", "prediction", type_="foreignkey")
    op.drop_index("ix_prediction_job_id", table_name="prediction")


def downgrade() -> None:
    # The column stayed but was not kept up to date meanwhile: recount it for the code that reads it.
    op.execute("UPDATE task SET total_predictions = 0 WHERE total_predictions <> 0")
    op.execute(
        "UPDATE task t SET total_predictions = c.n "
        "FROM (SELECT task_id, count(*) AS n FROM prediction GROUP BY task_id) AS c WHERE t.id = c.task_id"
    )
    # What the job key's ON DELETE SET NULL would have done meanwhile, so the key validates.
    op.execute(
        "UPDATE prediction p SET job_id = NULL "
        "WHERE p.job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM job j WHERE j.id = p.job_id)"
    )
    op.create_foreign_key(
        "fk_prediction_ml_backend_id_ml_backend",
        "prediction",
        "ml_backend",
        ["ml_backend_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_prediction_job_id", "prediction", ["job_id"], unique=False)
    op.create_foreign_key(
        "fk_prediction_job_id_job", "prediction", "job", ["job_id"], ["id"], ondelete="SET NULL"
    )
    op.create_foreign_key(
        "fk_prediction_project_id_project",
        "prediction",
        "project",
        ["project_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index(
        "ix_prediction_task_id_ml_backend_id_model_version",
        "prediction",
        ["task_id", "ml_backend_id", "model_version"],
        unique=False,
    )
    op.create_index(
        "ix_prediction_task_id_model_version", "prediction", ["task_id", "model_version"], unique=False
    )
    op.drop_index("ix_prediction_task_id_model_version_ml_backend_id", table_name="prediction")
