"""Serves the console: ``/`` is the single-page app, ``/console/`` its modules and the vendored editor."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from services.annotation_api.console.editor import EDITOR_DIR

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The app shell; every screen is a hash route, so a reload lands on the same screen."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """The shell route plus the two static trees (editor files are absent until ``make run`` fetches them)."""
    app.include_router(router)
    app.mount("/console/editor", StaticFiles(directory=EDITOR_DIR, check_dir=False), name="console-editor")
    app.mount("/console", StaticFiles(directory=STATIC_DIR), name="console")
