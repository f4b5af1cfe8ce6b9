"""Browser tests: Debian's chromium driven by Playwright against the real stack (API, gateway, worker).

Chromium must be installed (``apt-get install chromium``; ``.ci/run`` does it): without it these tests
fail with that instruction instead of being skipped. Screenshots of every screen land in
``test-artifacts/console/`` (git-ignored) so a person can look at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from services.annotation_api.console.editor import EDITOR_DIR, EDITOR_FILES
from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from tests.support.workers import gateway_worker

SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
# A deadline for each expectation, generous for a loaded CI machine (each still returns as soon as it holds).
expect.set_options(timeout=20_000)


def chromium_path() -> str:
    """``LABELLOOP_CHROMIUM`` or Debian's chromium; a clear failure (never a skip) when neither exists."""
    for candidate in (os.environ.get("LABELLOOP_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "Chromium is required for the console's browser tests: install it with "
        "`apt-get install -y chromium` (.ci/run does this) or set LABELLOOP_CHROMIUM to its path."
    )


@pytest.fixture
def api_settings(api_settings: ApiSettings) -> ApiSettings:
    """Backends re-checked every half second, so a new model version shows up while the test watches."""
    return api_settings.model_copy(update={"backend_check_interval_s": 0.5})


@pytest.fixture
async def worker(gateway_settings: GatewaySettings) -> AsyncIterator[None]:
    """A gateway worker serving the queue for the whole test, as ``make run`` has."""
    running = gateway_worker(gateway_settings, burst=False)
    task = asyncio.create_task(running.main())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await running.close()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    missing = [name for name in EDITOR_FILES.values() if not (EDITOR_DIR / name).is_file()]
    assert not missing, f"the Label Studio editor is not vendored ({missing}): run `make editor`"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any uncaught script error."""
    errors: list[str] = []
    opened = await context.new_page()
    opened.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "favicon" not in message.text:
            errors.append(message.text)

    opened.on("console", on_console)
    yield opened
    script_errors = [
        e for e in errors if "Failed to load resource" not in e and not _editor_teardown_noise(e)
    ]
    assert not script_errors, "\n".join(script_errors)


def _editor_teardown_noise(message: str) -> bool:
    """LSF 1.4 logs this from a reaction while its React tree unmounts (task to task); nothing breaks."""
    return (
        message.startswith("[mobx] Encountered an uncaught exception") and "reading 'regionStore'" in message
    )


async def shot(page: Page, name: str) -> None:
    """A screenshot at 1280x800 plus one in a narrow (390 px) window, for people to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.screenshot(path=str(SHOTS / f"{name}-narrow.png"))
    await page.set_viewport_size({"width": 1280, "height": 800})
