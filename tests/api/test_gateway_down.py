"""The model gateway down, from the users' side: what needs it answers 503 naming it; the rest is served.

No ``gateway_server`` fixture here: the API's ``gateway_url`` points at a free port where nothing listens,
as when the gateway crashed or is being redeployed.
"""

from __future__ import annotations

import httpx

from tests.fakes.fake_backend import SENTIMENT_CONFIG
from tests.support.builders import create_project, import_texts


async def test_what_needs_the_gateway_is_a_503_naming_it_and_the_rest_is_served(
    api: httpx.AsyncClient,
) -> None:
    project = await create_project(api, SENTIMENT_CONFIG, title="gateway down")
    await import_texts(api, project["id"], 3)

    connect = await api.post("/api/ml", json={"project": project["id"], "url": "http://127.0.0.1:9"})
    assert connect.status_code == 503, connect.text
    assert connect.json()["detail"].startswith("Model gateway at http://127.0.0.1:")
    assert "unreachable" in connect.json()["detail"]
    assert (await api.get("/api/ml", params={"project": project["id"]})).json() == []

    assert (await api.get(f"/api/projects/{project['id']}")).status_code == 200
    page = await api.get("/api/tasks", params={"project": project["id"]})
    assert page.status_code == 200 and len(page.json()["tasks"]) == 3
