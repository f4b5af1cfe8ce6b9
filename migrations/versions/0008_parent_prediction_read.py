"""an annotation's parent_prediction is resolved when read; deleting predictions writes no annotation

Revision ID: 0008_parent_prediction
Revises: 0007_lean_predictions

``annotation.parent_prediction_id``'s foreign key (``ON DELETE SET NULL``) ran one trigger query per
deleted prediction, about 14 µs each even when no annotation referred to it (92% of deleting a batch of
5,000 predictions), and then rewrote every annotation made from one, with its index entries (issue 9).
The column now keeps the id as written and reads show it only while that prediction exists
(``Annotation.parent_prediction``, ``tasks/repository.PARENT_PREDICTION``): what a client sees is what the
key's ``SET NULL`` showed, and prediction ids are never reused. Its index served only the key's action.

During a rolling upgrade, API processes of the previous release show the id of a prediction deleted
meanwhile until they are replaced; nothing else changes for them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008_parent_prediction"
down_revision: str | Sequence[str] | None = "0007_lean_predictions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_annotation_parent_prediction_id_prediction", "annotation", type_="foreignkey")
    op.drop_index("ix_annotation_parent_prediction_id", table_name="annotation")


def downgrade() -> None:
    op.create_index(
        "ix_annotation_parent_prediction_id", "annotation", ["parent_prediction_id"], unique=False
    )
    op.execute(
        "UPDATE annotation a SET parent_prediction_id = NULL WHERE parent_prediction_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM prediction p WHERE p.id = a.parent_prediction_id)"
    )
    op.create_foreign_key(
        "fk_annotation_parent_prediction_id_prediction",
        "annotation",
        "prediction",
        ["parent_prediction_id"],
        ["id"],
        ondelete="SET NULL",
    )
