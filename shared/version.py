"""``GET /api/version`` (Label Studio has it too): which release a service runs, without credentials.

The version is the installed package's (``pyproject.toml``), so the endpoint, the specs and the CLI
report the same number.
"""

from __future__ import annotations

from importlib.metadata import version

from fastapi import APIRouter
from pydantic import BaseModel, Field

VERSION = version("labelloop")


class VersionOut(BaseModel):
    release: str = Field(description="The labelloop release, as in pyproject.toml and CHANGELOG.md.")
    service: str = Field(description="Which service answered: `annotation-api` or `model-gateway`.")


def version_router(service: str) -> APIRouter:
    router = APIRouter(tags=["version"])

    @router.get("/api/version", response_model=VersionOut)
    async def get_version() -> VersionOut:
        """The running release; no credentials needed (deploy checks and clients compare it)."""
        return VersionOut(release=VERSION, service=service)

    return router
