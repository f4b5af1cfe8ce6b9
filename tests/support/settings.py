"""Per-suite settings: a suite narrows the defaults, a test narrows further with a marker."""

from __future__ import annotations

from typing import Any

import pytest

from services.annotation_api.settings import ApiSettings


def narrowed_api_settings(
    settings: ApiSettings, request: pytest.FixtureRequest, **defaults: Any
) -> ApiSettings:
    """``settings`` with the suite's ``defaults``, then ``@pytest.mark.api_settings(field=value)``."""
    update = dict(defaults)
    marker = request.node.get_closest_marker("api_settings")
    if marker is not None:
        update.update(marker.kwargs)
    return settings.model_copy(update=update)
