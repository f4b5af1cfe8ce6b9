"""Render the README's configuration table from the settings classes themselves (``make docs``).

The table lists every environment variable a labelloop process reads, so it cannot drift from the code:
a test fails when the README's copy differs from what this renders, and when a setting has no
description.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from services.annotation_api.settings import ApiSettings
from services.model_gateway.settings import GatewaySettings
from shared.settings import ENV_PREFIX

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"

SERVICES: list[tuple[str, type[BaseSettings]]] = [("API", ApiSettings), ("gateway, worker", GatewaySettings)]
# Read by the launcher (devstack/run.py) or the example backend rather than a service's settings class.
OTHER_VARIABLES: list[tuple[str, str, str, str]] = [
    ("LABELLOOP_DATA_DIR", "`make run`", "`.data`", "embedded Postgres/Redis data, tokens and model state"),
    ("LABELLOOP_API_PORT", "`make run`", "`8080`", "annotation API port"),
    (
        "LABELLOOP_INTERNAL_API_PORT",
        "`make run`",
        "API port + 1",
        "the API process the gateway worker calls (`/internal`)",
    ),
    ("LABELLOOP_GATEWAY_PORT", "`make run`", "`8090`", "gateway API port"),
    ("LABELLOOP_EXAMPLE_BACKEND_PORT", "`make run`", "`9090`", "example ML backend port"),
    (
        "LABELLOOP_EXAMPLE_BACKEND",
        "`make run`",
        "`examples.sklearn_backend`",
        "module served as the example backend",
    ),
    ("LABELLOOP_NER_BACKEND_PORT", "`make run`", "`9091`", "named-entity example backend port (interactive)"),
    (
        "LABELLOOP_BACKEND_DATA_DIR",
        "example backend",
        "`.data/example-backend`",
        "where the scikit-learn example keeps each project's model",
    ),
    (
        "LABELLOOP_NER_BACKEND_DATA_DIR",
        "NER example backend",
        "`.data/ner-backend`",
        "where the named-entity example keeps each project's learned entities",
    ),
]


class UndocumentedSetting(Exception):
    pass


def _variable(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return first if isinstance(first, str) else ENV_PREFIX + name.upper()
    if isinstance(alias, str):
        return alias
    return ENV_PREFIX + name.upper()


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value in ("", None, ()):
        return "(unset)"
    if isinstance(value, tuple):
        value = ",".join(str(item) for item in value)
    return f"`{value}`"


def render_table() -> str:
    """The Markdown table: one row per variable, services that read it merged into one column."""
    rows: dict[str, list[str]] = {}
    for service, settings_class in SERVICES:
        for name, field in settings_class.model_fields.items():
            if not field.description:
                raise UndocumentedSetting(f"{settings_class.__name__}.{name} has no description")
            variable = _variable(name, field)
            if variable in rows:
                rows[variable][0] += f", {service}"
                continue
            rows[variable] = [service, _default(field), field.description.replace("|", "\\|")]
    lines = ["| variable | read by | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{var}` | {used} | {default} | {text} |" for var, (used, default, text) in rows.items()]
    lines += [f"| `{var}` | {used} | {default} | {text} |" for var, used, default, text in OTHER_VARIABLES]
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {START} … {END} block")
    return pattern.sub(lambda _: f"{START}\n{render_table()}\n{END}", readme)


def main() -> None:
    README.write_text(readme_with_table(README.read_text()))
    print(f"wrote the settings table into {README}")


if __name__ == "__main__":
    main()
