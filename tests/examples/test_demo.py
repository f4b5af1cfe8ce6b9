"""The demo's learning loop end to end: real API, gateway, gateway worker and the scikit-learn backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from examples.demo.datasets import digit_items, split
from examples.demo.loop import Curve, LoopSettings, Point, learning_curve
from examples.demo.report import labels_to_reach, plot, table
from services.model_gateway.settings import GatewaySettings
from tests.support.servers import ServerThread
from tests.support.workers import gateway_worker


@pytest.fixture
async def worker(gateway_settings: GatewaySettings) -> AsyncIterator[None]:
    """A gateway worker serving the queue for the whole test (the loop waits on its jobs)."""
    running = gateway_worker(gateway_settings, burst=False)
    task = asyncio.create_task(running.main())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await running.close()


async def test_uncertainty_loop_learns_through_the_api(
    api: httpx.AsyncClient, gateway_server: ServerThread, worker: None, sklearn_backend: ServerThread
) -> None:
    pool, test = split(digit_items(), test_size=80, seed=0)
    pool = pool[:80]
    settings = LoopSettings(rounds=2, per_round=15, job_timeout_s=60)
    async with httpx.AsyncClient(base_url=sklearn_backend.url, timeout=30) as backend:
        curve = await learning_curve(
            api, backend, sklearn_backend.url, "uncertainty", pool, test, settings, say=lambda _: None
        )

    assert [point.labels for point in curve.points] == [15, 30]
    first, second = curve.points
    prefix = f"sklearn-{curve.project_id}-v"
    assert first.model_version.startswith(prefix) and second.model_version.startswith(prefix)
    assert int(second.model_version.removeprefix(prefix)) > int(first.model_version.removeprefix(prefix))
    assert second.accuracy > 0.4, f"held-out accuracy {second.accuracy:.2f} after 30 labels (chance is 0.1)"

    project = (await api.get(f"/api/projects/{curve.project_id}")).json()
    assert project["sampling"] == "Uncertainty sampling"
    assert project["model_version"] == second.model_version
    assert project["num_tasks_with_annotations"] == 30
    versions = (await api.get(f"/api/projects/{curve.project_id}/model-versions")).json()
    assert versions[second.model_version] == len(pool), "the whole pool was predicted by the latest model"


def test_report_table_summary_and_png(tmp_path: Path) -> None:
    curves = [
        Curve("uncertainty", 1, [Point(20, 0.5, "v1"), Point(40, 0.9, "v2")]),
        Curve("random", 2, [Point(20, 0.5, "v1"), Point(40, 0.8, "v2")]),
    ]
    assert table(curves).splitlines()[2:] == [
        "    20        0.500        0.500",
        "    40        0.900        0.800",
    ]
    assert (
        labels_to_reach(curves) == "labels needed to reach 0.800 held-out accuracy: uncertainty 40, random 40"
    )
    path = tmp_path / "curves.png"
    assert plot(curves, path, "title") is None
    assert path.read_bytes().startswith(b"\x89PNG")
