"""The gateway's arq worker run in-process, with the real job functions and the test's settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from arq.connections import RedisSettings

from services.model_gateway.settings import GatewaySettings
from services.model_gateway.worker import ReconnectingWorker, WorkerSettings, shutdown, startup
from shared.jobs import QUEUE_NAME


def gateway_worker(settings: GatewaySettings, *, burst: bool) -> ReconnectingWorker:
    """The worker class ``python -m services.model_gateway.worker`` runs, minus signal handling and results.

    ``burst=True`` returns from ``main()`` once the queue is empty, which makes a test deterministic.
    """
    worker = ReconnectingWorker(
        functions=WorkerSettings.functions,
        queue_name=QUEUE_NAME,
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        burst=burst,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings},
        handle_signals=False,
        keep_result=0,
        poll_delay=0.05,
        max_jobs=WorkerSettings.max_jobs,
    )
    # No probe listener in-process: tests run many workers, and the default port would collide.
    worker.settings = settings.model_copy(update={"worker_probe_port": 0})
    return worker


RunBurst = Callable[[], Awaitable[None]]
"""The ``run_burst`` fixture: ``await run_burst()`` drains the queue with an in-process worker."""


async def drain(settings: GatewaySettings) -> None:
    """Run an in-process gateway worker until the queue is empty (deterministic, no sleeps)."""
    worker = gateway_worker(settings, burst=True)
    try:
        await worker.main()
    finally:
        await worker.close()
