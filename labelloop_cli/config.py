"""Where the CLI finds the API: flags, then ``LABELLOOP_URL`` / ``LABELLOOP_TOKEN``, then a config file.

The file (``LABELLOOP_CONFIG``, default ``~/.config/labelloop/config.toml``) holds ``url = "…"`` and
``token = "…"``; a token kept there never shows in shell history or ``ps``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from labelloop_cli.errors import CliError, ExitCode

DEFAULT_URL = "http://127.0.0.1:8080"


def config_path() -> Path:
    return Path(os.environ.get("LABELLOOP_CONFIG") or Path.home() / ".config" / "labelloop" / "config.toml")


@dataclass(frozen=True)
class Target:
    url: str
    token: str


def _file_values(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read config file {path}: {exc}", ExitCode.USAGE) from None
    return {key: str(value) for key, value in values.items() if key in ("url", "token")}


def resolve(url: str | None, token: str | None) -> Target:
    """The first of flag, environment and config file that sets each value."""
    from_file = _file_values(config_path())
    chosen_url = url or os.environ.get("LABELLOOP_URL") or from_file.get("url") or DEFAULT_URL
    chosen_token = token or os.environ.get("LABELLOOP_TOKEN") or from_file.get("token")
    if not chosen_token:
        raise CliError(
            f'no API token: pass --token, set LABELLOOP_TOKEN, or put token = "…" in {config_path()}',
            ExitCode.USAGE,
        )
    return Target(chosen_url.rstrip("/"), chosen_token)
