"""Encryption at rest for secrets the API must send again later (ML backends' basic-auth passwords).

Fernet (AES-128-CBC + HMAC-SHA256) with keys from ``LABELLOOP_SECRET_KEY``: comma-separated, any strings
(each is stretched to a Fernet key with SHA-256). The first key encrypts, every key decrypts, so a key is
rotated by prepending the new one, running ``cli rotate-secret-key`` (re-encrypts every row), then
dropping the old one. The column type below encrypts on write and decrypts on read, so the rest of the
code only ever sees clear text and the database only ever ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Dialect, Text
from sqlalchemy.types import TypeDecorator

from services.annotation_api.errors import ApiError


class SecretKeyMissing(ApiError):
    status_code = 503


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


def cipher_for(keys: str) -> MultiFernet | None:
    parts = [part.strip() for part in keys.split(",") if part.strip()]
    return MultiFernet([_fernet(part) for part in parts]) if parts else None


_cipher: MultiFernet | None = None


def configure(keys: str) -> None:
    """Set the process's keys (the API does at start-up, from its settings)."""
    global _cipher
    _cipher = cipher_for(keys)


def _require() -> MultiFernet:
    if _cipher is None:
        raise SecretKeyMissing(
            "The server has no LABELLOOP_SECRET_KEY, so it cannot store or use a password."
        )
    return _cipher


def encrypt(clear: str) -> str:
    return _require().encrypt(clear.encode()).decode()


def decrypt(stored: str) -> str:
    try:
        return _require().decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyMissing(
            "A stored password does not decrypt with LABELLOOP_SECRET_KEY (was the key changed?)."
        ) from exc


def rotate(stored: str) -> str:
    """Re-encrypt with the first key (whichever key encrypted it before)."""
    return _require().rotate(stored.encode()).decode()


class EncryptedText(TypeDecorator[str]):
    """A text column holding Fernet ciphertext; Python sees the clear text."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else decrypt(str(value))
