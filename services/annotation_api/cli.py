"""Operator commands: ``python -m services.annotation_api.cli create-user --email you@example.com``.

``create-user`` creates the user if missing and prints a NEW API token for it (tokens are stored hashed,
so this is the only time it is shown); a new user gets an organization of its own, or joins the one
of ``--same-organization-as`` another user (tokens reach their organization's projects only). ``rotate-secret-key`` re-encrypts stored passwords with the first
key of ``LABELLOOP_SECRET_KEY``; ``rotate-backend-token --backend ID`` revokes an ML backend's access
token (it gets a new one at its next check). Uses ``DATABASE_URL`` like the API itself.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from sqlalchemy import delete, select, update
from sqlalchemy.orm.attributes import flag_modified

from services.annotation_api import secret_box
from services.annotation_api.auth.service import ensure_user_with_token, new_token_key
from services.annotation_api.db import make_engine, make_sessionmaker
from services.annotation_api.models import ApiToken, MlBackend, User
from services.annotation_api.settings import ApiSettings


async def create_user(email: str, colleague: str | None = None) -> str:
    engine = make_engine(ApiSettings().database_url, pool_size=1)
    try:
        key = new_token_key()
        async with make_sessionmaker(engine).begin() as session:
            organization_id = None
            if colleague is not None:
                organization_id = await session.scalar(
                    select(User.organization_id).where(User.email == colleague)
                )
                if organization_id is None:
                    raise SystemExit(f"no user {colleague}")
            await ensure_user_with_token(session, email, key, organization_id)
        return key
    finally:
        await engine.dispose()


async def rotate_secret_key() -> int:
    settings = ApiSettings()
    secret_box.configure(settings.secret_key)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine).begin() as session:
            backends = (await session.execute(select(MlBackend).with_for_update())).scalars().all()
            for backend in backends:
                if backend.basic_auth_pass is not None:
                    # Read decrypted with any key; written back encrypted with the first.
                    flag_modified(backend, "basic_auth_pass")
            await session.flush()
            return sum(backend.basic_auth_pass is not None for backend in backends)
    finally:
        await engine.dispose()


async def rotate_backend_token(backend_id: int) -> bool:
    engine = make_engine(ApiSettings().database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine).begin() as session:
            await session.execute(delete(ApiToken).where(ApiToken.ml_backend_id == backend_id))
            changed = await session.execute(
                update(MlBackend)
                .where(MlBackend.id == backend_id)
                .values(access_token_salt=secrets.token_hex(16), last_checked_at=None)
                .returning(MlBackend.id)
            )
            return changed.first() is not None
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.annotation_api.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-user", help="create a user (if missing) and print a new API token")
    create.add_argument("--email", required=True)
    create.add_argument("--same-organization-as", metavar="EMAIL", help="join this user's organization")
    commands.add_parser("rotate-secret-key", help="re-encrypt stored passwords with the first secret key")
    rotate = commands.add_parser("rotate-backend-token", help="revoke an ML backend's access token")
    rotate.add_argument("--backend", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "rotate-secret-key":
        print(f"re-encrypted {asyncio.run(rotate_secret_key())} password(s)")
        return 0
    if args.command == "rotate-backend-token":
        if not asyncio.run(rotate_backend_token(args.backend)):
            print(f"no ML backend {args.backend}", file=sys.stderr)
            return 1
        print(f"revoked; backend {args.backend} gets a new token at its next check")
        return 0
    if "@" not in args.email:
        parser.error("--email must be an e-mail address")
    print(asyncio.run(create_user(args.email, args.same_organization_as)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
