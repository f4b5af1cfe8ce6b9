"""Schemathesis on both services' published OpenAPI specs: every route, every check, a bounded budget.

The specs are the committed ``docs/openapi/*.json`` (what clients read), run against the real servers;
whatever routes they list are exercised, so new routes are covered without touching this test. All of
schemathesis' checks run (no server error, documented status codes and ``Allow`` headers, response
schemas, schema-invalid input rejected, schema-valid input accepted, …) with the few exceptions
``schemathesis.toml`` states and explains, plus our own ``hooks.py`` check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SERVICE_TOKEN, TEST_API_TOKEN
from tests.support.servers import ServerThread

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT / "docs" / "openapi"
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = "5"
MAX_TIME_S = "40"
"""Per run: the coverage phase (every operation) comes first, fuzzing gets what remains."""


def _schemathesis(spec: Path, url: str, token: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", str(spec)]
        + ["--url", url, "--header", f"Authorization: {token}", "--checks", "all"]
        + ["--max-examples", MAX_EXAMPLES, "--generation-deterministic", "--max-time", MAX_TIME_S]
        + ["--workers", "1", "--no-color", "--warnings", "off", "--report-dir", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.conformance.hooks", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=150,
    )


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("gateway_server")
def test_annotation_api_conforms_to_its_spec(api_server: ServerThread, tmp_path: Path) -> None:
    run = _schemathesis(SPEC_DIR / "annotation_api.json", api_server.url, f"Token {TEST_API_TOKEN}", tmp_path)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("api_server")  # the public predict looks its backend up there
def test_model_gateway_conforms_to_its_spec(gateway_server: ServerThread, tmp_path: Path) -> None:
    run = _schemathesis(
        SPEC_DIR / "model_gateway.json", gateway_server.url, f"Bearer {SERVICE_TOKEN}", tmp_path
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
