"""security: organizations, scoped ML backend tokens, URL credentials out of URLs, encrypted passwords

Revision ID: 0005_security
Revises: 0003_scale

Existing users and projects all join one organization ("default"): as before, they see each other's
projects; users created later get their own unless told to join one. Existing ``basic_auth_pass`` values are encrypted with the first key of ``LABELLOOP_SECRET_KEY`` (the
migration refuses to run without one when a password is stored); credentials inside a backend URL move
to basic auth; the old unscoped per-project backend tokens are deleted (each backend gets a scoped one
at its next check).
"""

import os
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import sqlalchemy as sa
from alembic import op

revision: str = "0005_security"
down_revision: str | Sequence[str] | None = "0003_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _cipher():  # type: ignore[no-untyped-def]
    from services.annotation_api.secret_box import cipher_for

    cipher = cipher_for(os.environ.get("LABELLOOP_SECRET_KEY", ""))
    if cipher is None:
        raise RuntimeError("ML backends store passwords: set LABELLOOP_SECRET_KEY to encrypt them.")
    return cipher


def _organizations() -> None:
    op.create_table(
        "organization",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=254), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
    )
    op.execute(
        "INSERT INTO organization (title) SELECT 'default'"
        ' WHERE EXISTS (SELECT 1 FROM "user") OR EXISTS (SELECT 1 FROM project)'
    )
    for table in ("user", "project"):
        op.add_column(table, sa.Column("organization_id", sa.Integer(), nullable=True))
        op.execute(f'UPDATE "{table}" SET organization_id = (SELECT min(id) FROM organization)')
        op.alter_column(table, "organization_id", nullable=False)
        op.create_index(op.f(f"ix_{table}_organization_id"), table, ["organization_id"], unique=False)
        op.create_foreign_key(
            op.f(f"fk_{table}_organization_id_organization"),
            table,
            "organization",
            ["organization_id"],
            ["id"],
            ondelete="CASCADE",
        )


def upgrade() -> None:
    _organizations()
    op.add_column("api_token", sa.Column("project_id", sa.Integer(), nullable=True))
    op.add_column("api_token", sa.Column("ml_backend_id", sa.Integer(), nullable=True))
    op.create_index(op.f("ix_api_token_project_id"), "api_token", ["project_id"], unique=False)
    op.create_index(op.f("ix_api_token_ml_backend_id"), "api_token", ["ml_backend_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_api_token_project_id_project"),
        "api_token",
        "project",
        ["project_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_api_token_ml_backend_id_ml_backend"),
        "api_token",
        "ml_backend",
        ["ml_backend_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.add_column(
        "ml_backend",
        sa.Column(
            "access_token_salt",
            sa.String(length=32),
            server_default=sa.text("md5(random()::text)"),
            nullable=False,
        ),
    )
    op.execute(
        'DELETE FROM api_token USING "user" WHERE api_token.user_id = "user".id'
        " AND \"user\".email LIKE 'ml-backend+project%@labelloop.local'"
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, url, auth_method, basic_auth_user, basic_auth_pass FROM ml_backend")
    ).all()
    cipher = None
    for row in rows:
        url, user, password, method = row.url, row.basic_auth_user, row.basic_auth_pass, row.auth_method
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            url = urlunsplit(
                (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment)
            )
            if user is None and password is None:
                user = unquote(parts.username or "")
                password = None if parts.password is None else unquote(parts.password)
            method = "BASIC_AUTH" if method == "NONE" else method
        if password is not None:
            cipher = cipher or _cipher()
            password = cipher.encrypt(password.encode()).decode()
        connection.execute(
            sa.text(
                "UPDATE ml_backend SET url = :url, auth_method = :method, basic_auth_user = :user,"
                " basic_auth_pass = :password WHERE id = :id"
            ),
            {"url": url, "method": method, "user": user, "password": password, "id": row.id},
        )


def downgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, basic_auth_pass FROM ml_backend WHERE basic_auth_pass IS NOT NULL")
    ).all()
    for row in rows:
        clear = _cipher().decrypt(row.basic_auth_pass.encode()).decode()
        connection.execute(
            sa.text("UPDATE ml_backend SET basic_auth_pass = :p WHERE id = :id"), {"p": clear, "id": row.id}
        )
    op.drop_column("ml_backend", "access_token_salt")
    op.drop_constraint(op.f("fk_api_token_ml_backend_id_ml_backend"), "api_token", type_="foreignkey")
    op.drop_constraint(op.f("fk_api_token_project_id_project"), "api_token", type_="foreignkey")
    op.drop_index(op.f("ix_api_token_ml_backend_id"), table_name="api_token")
    op.drop_index(op.f("ix_api_token_project_id"), table_name="api_token")
    op.drop_column("api_token", "ml_backend_id")
    op.drop_column("api_token", "project_id")
    for table in ("project", "user"):
        op.drop_constraint(op.f(f"fk_{table}_organization_id_organization"), table, type_="foreignkey")
        op.drop_index(op.f(f"ix_{table}_organization_id"), table_name=table)
        op.drop_column(table, "organization_id")
    op.drop_table("organization")
