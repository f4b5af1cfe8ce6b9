"""``python -m devstack.exec -- CMD …``: run CMD with DATABASE_URL / REDIS_URL pointing at real servers.

The servers are the configured ones when the variables are set, else the embedded ones of the same data
folder as ``make run`` (so ``make migrate`` migrates the database ``make run`` uses): those ``make run``
already runs when it is up (attaching, never starting a second server on the same files), else started
for the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devstack.embedded import EmbeddedStack, StackInUse

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
        try:
            env.update(stack.start(env))
        except StackInUse as in_use:
            print(
                f"using the servers of the running stack (pid {in_use.running.get('pid', '?')})",
                file=sys.stderr,
            )
            env.update({name: url for name, url in in_use.running.items() if name.endswith("_URL")})
        return subprocess.run(command, env=env).returncode
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
