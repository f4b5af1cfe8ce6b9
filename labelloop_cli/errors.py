"""One-line errors and the exit codes scripts can branch on."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    API_ERROR = 1
    """The API refused the request (4xx/5xx); the message is its ``detail``."""
    USAGE = 2
    """Bad flags, a missing token or an unreadable file (typer uses 2 for usage errors too)."""
    UNREACHABLE = 3
    """No answer from the API at the configured URL."""
    JOB_FAILED = 4
    """A followed job ended failed or cancelled."""


class CliError(Exception):
    def __init__(self, message: str, code: ExitCode = ExitCode.API_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
