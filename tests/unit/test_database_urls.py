"""DATABASE_URL in any accepted form reaches SQLAlchemy and a bare asyncpg connection in the form each takes;
REDIS_URL is shown without its password."""

from __future__ import annotations

import pytest

from services.annotation_api.redis_claim import redis_url_without_password
from shared.settings import asyncpg_url, plain_postgres_url


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://u:p@127.0.0.1:5432/db?sslmode=require",
        "postgres://u:p@127.0.0.1:5432/db?sslmode=require",
        "postgresql+asyncpg://u:p@127.0.0.1:5432/db?sslmode=require",
    ],
)
def test_every_accepted_form_gives_both_driver_forms(given: str) -> None:
    assert asyncpg_url(given) == "postgresql+asyncpg://u:p@127.0.0.1:5432/db?sslmode=require"
    assert plain_postgres_url(given) == "postgresql://u:p@127.0.0.1:5432/db?sslmode=require"


def test_another_scheme_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        plain_postgres_url("mysql://u:p@127.0.0.1/db")


def test_a_redis_url_shown_in_ready_and_logs_has_no_password() -> None:
    assert (
        redis_url_without_password("redis://:s3cret@cache.internal:6379/2") == "redis://cache.internal:6379/2"
    )
    assert redis_url_without_password("rediss://user:p@ss@h:6380/0") == "rediss://h:6380/0"
    assert redis_url_without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
