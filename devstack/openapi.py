"""Write both services' OpenAPI specs into ``docs/openapi/`` (``make openapi``): the public one of each
(``<service>.json``, what ``/openapi.json`` serves) and the internal one (``<service>.internal.json``, the
``/internal/*`` contract between the services, served at ``/internal/openapi.json``).

The committed files let clients and CI read the contract without running anything; a test fails when
they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.annotation_api.main import create_app as create_api_app
from services.model_gateway.main import create_app as create_gateway_app
from shared.api_docs import internal_spec

SPEC_DIR = Path(__file__).resolve().parents[1] / "docs" / "openapi"


def render_specs() -> dict[str, dict[str, Any]]:
    """The specs as the apps produce them, round-tripped through JSON like the committed files."""
    specs: dict[str, dict[str, Any]] = {}
    for name, app in (("annotation_api", create_api_app()), ("model_gateway", create_gateway_app())):
        specs[name] = app.openapi()
        specs[f"{name}.internal"] = internal_spec(app)
    return {name: json.loads(json.dumps(spec)) for name, spec in specs.items()}


def main() -> None:
    SPEC_DIR.mkdir(parents=True, exist_ok=True)
    for name, spec in render_specs().items():
        (SPEC_DIR / f"{name}.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        print(f"wrote {SPEC_DIR / name}.json")


if __name__ == "__main__":
    main()
