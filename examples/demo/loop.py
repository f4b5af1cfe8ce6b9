"""The learning loop, driven through the annotation API exactly as a labeling team would drive it.

One run = one fresh project and one sampling strategy: import the pool (ground truth stays here), connect
the ML backend, then per round let a simulated annotator label the next tasks the API serves, retrain,
re-predict the pool, and measure accuracy on a held-out set the API never sees. The first round labels
the same tasks whatever the strategy (the start of the seeded pool), so curves differ only by sampling. Every step is a public
API call; the held-out evaluation asks the backend's ``/predict`` directly, as any evaluation harness
would, so the test items never enter the project.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from examples.demo.datasets import DIGITS_CONFIG, Item

STRATEGIES = {"uncertainty": "Uncertainty sampling", "random": "Uniform sampling"}
SEQUENTIAL = "Sequential sampling"
_FINISHED = frozenset({"completed", "failed", "cancelled"})
_POLL_S = 0.1


class DemoError(RuntimeError):
    """A step of the loop failed; the message says which call and what the server answered."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    rounds: int = 10
    per_round: int = 20
    job_timeout_s: float = 300.0
    label_config: str = DIGITS_CONFIG
    from_name: str = "digit"
    to_name: str = "image"


@dataclass(frozen=True, slots=True)
class Point:
    """Held-out accuracy of the model trained on ``labels`` annotations."""

    labels: int
    accuracy: float
    model_version: str


@dataclass(frozen=True, slots=True)
class Curve:
    strategy: str
    project_id: int
    points: list[Point]


async def call(api: httpx.AsyncClient, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
    """One API call; anything but ``expect`` is a DemoError naming the call and the answer."""
    response = await api.request(method, path, **kwargs)
    if response.status_code != expect:
        raise DemoError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


async def wait_job(api: httpx.AsyncClient, job_id: int, timeout_s: float) -> dict[str, Any]:
    """Poll ``GET /api/jobs/{id}`` until the job finishes; a failed or cancelled job is a DemoError."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = await call(api, "GET", f"/api/jobs/{job_id}")
        if job["status"] in _FINISHED:
            if job["status"] != "completed":
                raise DemoError(f"job {job_id} ({job['kind']}) {job['status']}: {job.get('error')}")
            return job
        if time.monotonic() > deadline:
            raise DemoError(f"job {job_id} ({job['kind']}) not finished after {timeout_s:.0f} s: {job}")
        await asyncio.sleep(_POLL_S)


def project_ref(project: dict[str, Any]) -> str:
    """The ``"<id>.<created unix ts>"`` string backends key projects by."""
    created = datetime.fromisoformat(project["created_at"])
    return f"{project['id']}.{int(created.timestamp())}"


async def held_out_accuracy(
    backend: httpx.AsyncClient, project: dict[str, Any], test: list[Item], settings: LoopSettings
) -> tuple[float, str]:
    """Accuracy of the backend's current model on ``test`` and that model's version."""
    body = {
        "tasks": [{"id": -(i + 1), "data": item.data} for i, item in enumerate(test)],
        "project": project_ref(project),
        "label_config": settings.label_config,
        "params": {"login": None, "password": None, "context": None},
    }
    response = await backend.post("/predict", json=body)
    if response.status_code != 200:
        raise DemoError(f"backend /predict answered {response.status_code}: {response.text[:500]}")
    results = response.json()["results"]
    hits = 0
    version = ""
    for result, item in zip(results, test, strict=True):
        if result:
            version = result["model_version"]
            hits += result["result"][0]["value"]["choices"] == [item.label]
    return hits / len(test), version


async def learning_curve(
    api: httpx.AsyncClient,
    backend: httpx.AsyncClient,
    backend_url: str,
    strategy: str,
    pool: list[Item],
    test: list[Item],
    settings: LoopSettings,
    say: Callable[[str], None] = print,
    created: list[int] | None = None,
) -> Curve:
    """Run the loop for one sampling strategy in a new project; one point per round.

    The project's id is appended to ``created`` as soon as it exists, so a caller can delete it even
    when the loop fails halfway.
    """
    project: dict[str, Any] = await call(
        api,
        "POST",
        "/api/projects",
        201,
        json={
            "title": f"labelloop demo: {strategy} sampling",
            "label_config": settings.label_config,
            # Round 1 is the same for every strategy: the first tasks of the (seeded, shuffled) pool.
            "sampling": SEQUENTIAL,
        },
    )
    project_id = project["id"]
    if created is not None:
        created.append(project_id)
    imported = await call(
        api,
        "POST",
        f"/api/projects/{project_id}/import",
        201,
        params={"return_task_ids": "true"},
        json=[item.data for item in pool],
    )
    truth = dict(zip(imported["task_ids"], (item.label for item in pool), strict=True))
    ml = await call(
        api,
        "POST",
        "/api/ml",
        201,
        json={"url": backend_url, "project": project_id, "title": "sklearn online"},
    )
    say(f"[{strategy}] project {project_id}: {len(truth)} tasks, backend {ml['id']} at {backend_url}")

    points: list[Point] = []
    labeled = 0
    for round_no in range(1, settings.rounds + 1):
        for _ in range(settings.per_round):
            response = await api.get(f"/api/projects/{project_id}/next")
            if response.status_code == 404:
                break
            if response.status_code != 200:
                raise DemoError(
                    f"GET /api/projects/{project_id}/next answered {response.status_code}: {response.text[:500]}"
                )
            task_id = response.json()["id"]
            region = {
                "from_name": settings.from_name,
                "to_name": settings.to_name,
                "type": "choices",
                "value": {"choices": [truth[task_id]]},
            }
            await call(api, "POST", f"/api/tasks/{task_id}/annotations", 201, json={"result": [region]})
            labeled += 1
        trained = await call(api, "POST", f"/api/ml/{ml['id']}/train", 201, json={})
        await wait_job(api, trained["job_id"], settings.job_timeout_s)
        accuracy, version = await held_out_accuracy(backend, project, test, settings)
        started = await call(api, "POST", f"/api/ml/{ml['id']}/predict")
        predicted = await wait_job(api, started["job_id"], settings.job_timeout_s)
        if version:
            # Annotators (and uncertainty sampling) follow the project's version: show the new model's.
            await call(api, "PATCH", f"/api/projects/{project_id}", json={"model_version": version})
        if round_no == 1:
            await call(api, "PATCH", f"/api/projects/{project_id}", json={"sampling": STRATEGIES[strategy]})
        points.append(Point(labeled, accuracy, version))
        say(
            f"[{strategy}] round {round_no}: {labeled} labels, held-out accuracy {accuracy:.3f} "
            f"({version or 'no model yet'}; {predicted['done']} pool predictions)"
        )
    return Curve(strategy, project_id, points)
