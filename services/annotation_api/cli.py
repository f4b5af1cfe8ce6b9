"""Operator commands: ``python -m services.annotation_api.cli create-user --email you@example.com``.

Creates the user if missing and prints a NEW API token for it (tokens are stored hashed, so this is the
only time it is shown). Uses ``DATABASE_URL`` like the API itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.annotation_api.auth.service import ensure_user_with_token, new_token_key
from services.annotation_api.db import make_engine, make_sessionmaker
from services.annotation_api.settings import ApiSettings


async def create_user(email: str) -> str:
    engine = make_engine(ApiSettings().database_url, pool_size=1)
    try:
        key = new_token_key()
        async with make_sessionmaker(engine).begin() as session:
            await ensure_user_with_token(session, email, key)
        return key
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.annotation_api.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-user", help="create a user (if missing) and print a new API token")
    create.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    if "@" not in args.email:
        parser.error("--email must be an e-mail address")
    print(asyncio.run(create_user(args.email)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
