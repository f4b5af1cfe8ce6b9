"""the keys to task are kept per statement: one check per insert, one cascade per delete

Revision ID: 0012_task_keys_per_statement
Revises: 0011_deployment

``prediction``, ``annotation`` and ``task_lock`` referenced ``task`` through foreign keys, whose triggers
run one query per row: a check per row inserted (~5 µs of Postgres per bulk-predicted task, for tasks the
chunk has already locked) and a cascade per row deleted (three queries per deleted task, ~10 µs; issue 9,
``make bench-insert``, bench/README.md). Statement-level triggers with transition tables now do the same
work once per statement, set-based:

- after an insert (or an update that moves rows to other tasks) into one of the three tables, the rows'
  tasks are locked ``FOR KEY SHARE`` until the transaction ends, as the key's check locked them, and a
  missing one fails the statement with the key's own error (SQLSTATE 23503, the constraint's old name, the
  same message), so callers see no difference;
- after a delete from ``task``, one ``DELETE`` per table removes the deleted tasks' rows (the key's
  ``ON DELETE CASCADE``); ``TRUNCATE task`` empties the three tables too (``TRUNCATE … CASCADE``).

A delete waits for the inserts that hold its tasks, and its cascade then reads a fresh snapshot (as every
statement of a PL/pgSQL function does at READ COMMITTED, the isolation labelloop writes at), which shows
what they committed: no row outlives its task. The previous release's code runs unchanged on this schema.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_task_keys_per_statement"
down_revision: str | Sequence[str] | None = "0011_deployment"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, its former foreign key to task): the constraint name stays in the errors the check raises.
_REFERENCING = (
    ("prediction", "fk_prediction_task_id_task"),
    ("annotation", "fk_annotation_task_id_task"),
    ("task_lock", "fk_task_lock_task_id_task"),
)

_CHECK_FUNCTION = """
CREATE FUNCTION task_reference_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted bigint[];
    held integer;
    missing bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        wanted := ARRAY(SELECT DISTINCT task_id FROM new_rows ORDER BY 1);
    ELSE
        wanted := ARRAY(SELECT task_id FROM new_rows EXCEPT SELECT task_id FROM old_rows ORDER BY 1);
    END IF;
    SELECT count(*) INTO held FROM (
        SELECT 1 FROM task WHERE id = ANY(wanted) ORDER BY id FOR KEY SHARE
    ) AS locked;
    IF held < cardinality(wanted) THEN
        SELECT w INTO missing FROM unnest(wanted) AS w
        WHERE NOT EXISTS (SELECT 1 FROM task WHERE id = w) LIMIT 1;
        RAISE EXCEPTION 'insert or update on table "%" violates foreign key constraint "%"',
                TG_TABLE_NAME, TG_ARGV[0]
            USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, CONSTRAINT = TG_ARGV[0],
                  DETAIL = format('Key (task_id)=(%s) is not present in table "task".', missing);
    END IF;
    RETURN NULL;
END
$$
"""

_CASCADE_FUNCTION = """
CREATE FUNCTION task_children_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone bigint[] := ARRAY(SELECT id FROM gone_tasks);
BEGIN
    DELETE FROM prediction WHERE task_id = ANY(gone);
    DELETE FROM annotation WHERE task_id = ANY(gone);
    DELETE FROM task_lock WHERE task_id = ANY(gone);
    RETURN NULL;
END
$$
"""

_TRUNCATE_FUNCTION = """
CREATE FUNCTION task_children_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE prediction, annotation, task_lock;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(_CHECK_FUNCTION)
    op.execute(_CASCADE_FUNCTION)
    op.execute(_TRUNCATE_FUNCTION)
    for table, key in _REFERENCING:
        op.drop_constraint(key, table, type_="foreignkey")
        op.execute(
            f"CREATE TRIGGER {table}_task_inserted AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows"
            f" FOR EACH STATEMENT EXECUTE FUNCTION task_reference_check('{key}')"
        )
        op.execute(
            f"CREATE TRIGGER {table}_task_updated AFTER UPDATE ON {table}"
            " REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
            f" FOR EACH STATEMENT EXECUTE FUNCTION task_reference_check('{key}')"
        )
    op.execute(
        "CREATE TRIGGER task_children_deleted AFTER DELETE ON task REFERENCING OLD TABLE AS gone_tasks"
        " FOR EACH STATEMENT EXECUTE FUNCTION task_children_delete()"
    )
    op.execute(
        "CREATE TRIGGER task_children_truncated AFTER TRUNCATE ON task"
        " FOR EACH STATEMENT EXECUTE FUNCTION task_children_truncate()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER task_children_truncated ON task")
    op.execute("DROP TRIGGER task_children_deleted ON task")
    for table, key in _REFERENCING:
        op.execute(f"DROP TRIGGER {table}_task_updated ON {table}")
        op.execute(f"DROP TRIGGER {table}_task_inserted ON {table}")
        op.create_foreign_key(key, table, "task", ["task_id"], ["id"], ondelete="CASCADE")
    op.execute("DROP FUNCTION task_children_truncate()")
    op.execute("DROP FUNCTION task_children_delete()")
    op.execute("DROP FUNCTION task_reference_check()")
