"""arq worker of the model gateway: bulk prediction, training and webhook delivery run here.

Start with ``python -m services.model_gateway.worker``. Shared resources (settings, HTTP clients) are
created once at start-up and passed to every job in ``ctx``.
"""

from __future__ import annotations

from typing import Any

from arq import run_worker
from arq.connections import RedisSettings

from services.model_gateway.settings import GatewaySettings
from shared.jobs import QUEUE_NAME
from shared.logging import configure_logging


async def ping(ctx: dict[str, Any]) -> str:
    """A no-op job: lets operators and tests check that workers consume the queue."""
    return "pong"


async def startup(ctx: dict[str, Any]) -> None:
    ctx["settings"] = GatewaySettings()


async def shutdown(ctx: dict[str, Any]) -> None:
    return None


class WorkerSettings:
    functions = [ping]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    redis_settings = RedisSettings.from_dsn(GatewaySettings().redis_url)
    max_jobs = 16
    job_timeout = 600


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway-worker", settings.log_level, settings.log_json)
    run_worker(WorkerSettings)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
