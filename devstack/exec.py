"""``python -m devstack.exec -- CMD …``: run CMD with DATABASE_URL / REDIS_URL pointing at real servers.

The servers are the configured ones when the variables are set, else embedded ones using the same data
folder as ``make run`` (so ``make migrate`` migrates the database ``make run`` uses).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.embedded import EmbeddedStack

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    command = argv[1:] if argv and argv[0] == "--" else argv
    if not command:
        print("usage: python -m devstack.exec -- COMMAND [ARGS…]", file=sys.stderr)
        return 2
    data_dir = Path(os.environ.get("LABELLOOP_DATA_DIR", REPO_ROOT / ".data")).resolve()
    stack = EmbeddedStack(data_dir / "services", durable=True)
    env = dict(os.environ)
    try:
        env.update(stack.start(env))
        return subprocess.run(command, env=env).returncode
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
