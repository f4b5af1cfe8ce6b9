"""Configuration of the model gateway and its workers (env prefix ``LABELLOOP_``, ``REDIS_URL`` bare)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings, RedisSettingsMixin


class GatewaySettings(CommonSettings, RedisSettingsMixin):
    api_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Annotation API base URL (results are written there).",
    )
