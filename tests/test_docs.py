"""The docs pages work offline, have an Authorize button, and keep internal routes out of the public spec."""

from __future__ import annotations

import re
from typing import Any

import httpx

from devstack.openapi import render_specs
from tests.conftest import TEST_API_TOKEN
from tests.support.servers import ServerThread


async def test_docs_pages_load_every_asset_from_the_service_itself(
    api_server: ServerThread, gateway_server: ServerThread
) -> None:
    for running in (api_server, gateway_server):
        async with httpx.AsyncClient(base_url=running.url) as client:
            for page in ("/docs", "/redoc", "/internal/docs"):
                html = (await client.get(page)).text
                urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'""", html)
                assets = [url for pair in urls for url in pair if url]
                assert assets, page
                assert not [url for url in assets if "//" in url], f"{page} loads from another host: {assets}"
                for asset in assets:
                    response = await client.get(asset)
                    assert response.status_code == 200, (page, asset)
                    assert len(response.content) > 1000 or asset.endswith(".json"), (page, asset)


async def test_public_and_internal_specs_are_separate_and_declare_their_credentials(
    api_server: ServerThread, gateway_server: ServerThread
) -> None:
    for running in (api_server, gateway_server):
        async with httpx.AsyncClient(base_url=running.url) as client:
            public = (await client.get("/openapi.json")).json()
            internal = (await client.get("/internal/openapi.json")).json()
        check_split(public, internal)


def check_split(public: dict[str, Any], internal: dict[str, Any]) -> None:
    assert public["paths"] and internal["paths"]
    assert not [path for path in public["paths"] if path.startswith("/internal")]
    assert all(path.startswith("/internal/") for path in internal["paths"])
    assert public["components"]["securitySchemes"] == {
        "Token": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": public["components"]["securitySchemes"]["Token"]["description"],
        }
    }
    assert "Token <your API token>" in public["components"]["securitySchemes"]["Token"]["description"]
    assert internal["components"]["securitySchemes"]["ServiceToken"]["scheme"] == "bearer"
    for path, operations in public["paths"].items():
        for method, operation in operations.items():
            needs_token = path.startswith("/api/") and path != "/api/version"
            assert (operation.get("security") == [{"Token": []}]) == needs_token, (method, path)
    for operations in internal["paths"].values():
        assert all(op["security"] == [{"ServiceToken": []}] for op in operations.values())


async def test_the_authorize_scheme_is_what_the_api_accepts(api_server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as client:
        scheme = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]["Token"]
        without = await client.get("/api/projects")
        with_token = await client.get("/api/projects", headers={scheme["name"]: f"Token {TEST_API_TOKEN}"})
    assert (without.status_code, with_token.status_code) == (401, 200)


async def test_version_endpoint_needs_no_credentials(
    api_server: ServerThread, gateway_server: ServerThread
) -> None:
    for running, service in ((api_server, "annotation-api"), (gateway_server, "model-gateway")):
        async with httpx.AsyncClient(base_url=running.url) as client:
            answer = (await client.get("/api/version")).json()
            spec = (await client.get("/openapi.json")).json()
        assert answer == {"release": spec["info"]["version"], "service": service}
        assert re.fullmatch(r"\d+\.\d+\.\d+", answer["release"])


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_every_field_a_public_response_returns_is_described() -> None:
    for name in ("annotation_api", "model_gateway"):
        spec = render_specs()[name]
        schemas = spec["components"]["schemas"]
        pending = _refs([op["responses"] for ops in spec["paths"].values() for op in ops.values()])
        seen: set[str] = set()
        while pending:
            schema = pending.pop()
            if schema not in seen:
                seen.add(schema)
                pending += _refs(schemas[schema])
        seen -= {
            "HTTPValidationError",
            "ValidationError",
        }  # FastAPI's own (our errors answer 400 with detail)
        assert "JobOut" in seen or name == "model_gateway"
        undescribed = [
            f"{schema}.{field}"
            for schema in sorted(seen)
            for field, body in schemas[schema].get("properties", {}).items()
            if not body.get("description")
        ]
        assert undescribed == [], name
