"""Both services' API docs: public and internal routes in separate specs, with working Authorize buttons.

``/openapi.json``, ``/docs`` and ``/redoc`` describe what clients may call; ``/internal/openapi.json`` and
``/internal/docs`` describe the service-to-service contract (``/internal/*``, service token only), so a
client reading the public docs never meets routes it cannot use. Swagger UI and ReDoc load their
JavaScript from the ``fastapi-offline`` wheel, served here: the pages work without internet access.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.staticfiles import StaticFiles

from shared.openapi_values import declare_storable_values, schema_refs

INTERNAL_PREFIX = "/internal"
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


CLIENT_TOKEN = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="Enter `Token <your API token>` (the word Token, a space, the key), as Label Studio "
    "expects; `Bearer <key>` works too.",
    auto_error=False,
)
"""Declares the client credential in the spec (the Authorize button); the services check it themselves."""

SERVICE_TOKEN = HTTPBearer(
    scheme_name="ServiceToken",
    description="`LABELLOOP_SERVICE_TOKEN`, shared by the annotation API and the gateway only.",
    auto_error=False,
)


def is_internal(path: str) -> bool:
    return path == INTERNAL_PREFIX or path.startswith(INTERNAL_PREFIX + "/")


def _only(full: dict[str, Any], *, internal: bool, title: str, description: str) -> dict[str, Any]:
    """``full`` cut to the public (or internal) paths, with only the schemas and schemes they use."""
    spec = {**full, "info": {**full["info"], "title": title, "description": description}}
    spec["paths"] = {path: ops for path, ops in full["paths"].items() if is_internal(path) == internal}
    components = full.get("components", {})
    schemas: dict[str, Any] = components.get("schemas", {})
    wanted: set[str] = set()
    pending = list(schema_refs(spec["paths"]))
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(schema_refs(schemas.get(name, {})))
    used_schemes = {
        name
        for ops in spec["paths"].values()
        for op in ops.values()
        for req in op.get("security", [])
        for name in req
    }
    kept: dict[str, Any] = {}
    if wanted:
        kept["schemas"] = {name: schema for name, schema in schemas.items() if name in wanted}
    schemes = {k: v for k, v in components.get("securitySchemes", {}).items() if k in used_schemes}
    if schemes:
        kept["securitySchemes"] = schemes
    spec.pop("components", None)
    if kept:
        spec["components"] = kept
    return spec


def build_specs(app: FastAPI, *, refuses_nul: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(public, internal)``: the app's spec split on ``/internal``, declaring the values it refuses."""
    full = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    declare_storable_values(full, refuses_nul=refuses_nul)
    public = _only(full, internal=False, title=app.title, description=app.description)
    internal = _only(
        full,
        internal=True,
        title=f"{app.title} (internal)",
        description="Service-to-service routes (service token only); clients use the public spec at "
        "/openapi.json.",
    )
    return public, internal


def internal_spec(app: FastAPI) -> dict[str, Any]:
    """The internal spec of an app ``install_docs`` prepared (``make openapi`` writes it)."""
    result: dict[str, Any] = app.state.internal_openapi()
    return result


def install_docs(app: FastAPI, *, refuses_nul: bool = True) -> None:
    """Serve both specs, Swagger UI and ReDoc from local assets; call after every router is included.

    The app must be created with ``docs_url=None, redoc_url=None`` (FastAPI's own pages use a CDN).
    ``refuses_nul``: the app refuses NUL in text (it stores it in Postgres), and its specs say so.
    """
    cache: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def spec(internal: bool) -> dict[str, Any]:
        if not cache:
            cache.append(build_specs(app, refuses_nul=refuses_nul))
        return cache[0][1 if internal else 0]

    def public_spec() -> dict[str, Any]:
        return spec(False)

    app.openapi = public_spec  # type: ignore[method-assign]  # FastAPI's documented override
    app.state.internal_openapi = lambda: spec(True)
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    def swagger(spec_url: str, title: str) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=spec_url,
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    async def docs(_: Request) -> HTMLResponse:
        return swagger("/openapi.json", f"{app.title} – docs")

    async def internal_docs(_: Request) -> HTMLResponse:
        return swagger(f"{INTERNAL_PREFIX}/openapi.json", f"{app.title} (internal) – docs")

    async def redoc(_: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} – ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    async def internal_openapi(_: Request) -> JSONResponse:
        return JSONResponse(spec(True))

    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(f"{INTERNAL_PREFIX}/docs", internal_docs, include_in_schema=False)
    app.add_route(f"{INTERNAL_PREFIX}/openapi.json", internal_openapi, include_in_schema=False)
