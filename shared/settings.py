"""Settings pieces both services share.

Every service reads its configuration from the environment through pydantic-settings with the
``LABELLOOP_`` prefix. The two connection URLs are the exception: ``DATABASE_URL`` and ``REDIS_URL``
are the names every hosting platform already uses, so they are read unprefixed.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LABELLOOP_"


class CommonSettings(BaseSettings):
    """Settings every labelloop process understands."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    log_level: str = Field(default="INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_json: bool | None = Field(
        default=None,
        description="JSON log lines (default: JSON unless stderr is a terminal).",
    )
    otlp_endpoint: str = Field(
        default="",
        description="OpenTelemetry collector (OTLP over HTTP, e.g. `http://127.0.0.1:4318`) traces are sent "
        "to; unset: no tracing.",
    )
    service_token: str = Field(
        default="",
        description="Credential the API and the gateway use with each other; client tokens never work here.",
    )


class RedisSettingsMixin(BaseSettings):
    """The Redis the arq queue lives on."""

    # Restated: pydantic merges the configs of a model's bases in order, so a mixin with the default
    # config listed after CommonSettings would otherwise drop the LABELLOOP_ prefix.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "LABELLOOP_REDIS_URL"),
        description="`redis://host:port/db` of the arq queue (embedded under `make run` / `make test`).",
    )


def asyncpg_url(url: str) -> str:
    """Turn a plain ``postgresql://`` URL into the SQLAlchemy asyncpg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://…")


def plain_postgres_url(url: str) -> str:
    """The same URL in the ``postgresql://`` form a bare driver connection (``asyncpg.connect``) takes."""
    return "postgresql://" + asyncpg_url(url).removeprefix("postgresql+asyncpg://")
