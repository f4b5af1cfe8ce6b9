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


_FASTAPI_OWN = {"HTTPValidationError", "ValidationError"}  # FastAPI's own (our errors answer 400 with detail)


def _undescribed_fields(spec: dict[str, Any], roots: list[Any]) -> tuple[set[str], list[str]]:
    """The component schemas ``roots`` reach (through $refs, at any depth) and every field, of those or of
    an inline schema on the way, that has no description."""
    schemas = spec["components"]["schemas"]
    pending: list[tuple[str, Any]] = [("inline", root) for root in roots]
    seen: set[str] = set()
    undescribed: list[str] = []
    while pending:
        owner, node = pending.pop()
        if isinstance(node, list):
            pending += [(owner, item) for item in node]
        elif isinstance(node, dict):
            ref = node.get("$ref")
            name = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None
            if name is not None and name not in seen and name not in _FASTAPI_OWN:
                seen.add(name)
                pending.append((name, schemas[name]))
            title = node.get("title")
            owner = title if isinstance(title, str) else owner
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    undescribed += [
                        f"{owner}.{field}" for field, body in value.items() if not body.get("description")
                    ]
                    pending += [(owner, body) for body in value.values()]
                else:
                    pending.append((owner, value))
    return seen, sorted(set(undescribed))


def test_every_field_a_public_response_returns_is_described() -> None:
    for name in ("annotation_api", "model_gateway"):
        spec = render_specs()[name]
        seen, undescribed = _undescribed_fields(
            spec, [op["responses"] for ops in spec["paths"].values() for op in ops.values()]
        )
        assert "JobOut" in seen or name == "model_gateway"
        assert undescribed == [], name


def test_every_field_of_a_public_request_body_and_every_parameter_is_described() -> None:
    for name in ("annotation_api", "model_gateway"):
        spec = render_specs()[name]
        operations = [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
        seen, undescribed = _undescribed_fields(spec, [op.get("requestBody", {}) for _, _, op in operations])
        assert "PublicPredictRequest" in seen if name == "model_gateway" else "ProjectCreate" in seen
        assert undescribed == [], name
        parameters = [
            f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
            for method, path, op in operations
            for parameter in op.get("parameters", [])
            if not parameter.get("description")
        ]
        assert parameters == [], name
