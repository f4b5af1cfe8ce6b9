"""Stored backends for the public ``POST /api/predict``: asked of the annotation API, never kept.

The gateway has no database: the API's ``/internal/predict-targets`` says how to call a backend and
which label config its predictions must fit, and whether the caller's token reaches it.
"""

from __future__ import annotations

import httpx
from fastapi import HTTPException, status
from pydantic import ValidationError

from services.model_gateway.settings import GatewaySettings
from shared.gateway_contract import PredictTarget, PredictTargetRequest
from shared.logging import outgoing_request_headers

_PASSED_ON = frozenset({401, 403, 404})
"""The API's answers about the caller (bad token, a backend's token, a backend out of reach), given back."""


class TargetResolver:
    """One pooled client of the API's ``/internal`` side, holding the service token. Close with ``aclose()``."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._client = httpx.AsyncClient(
            base_url=settings.api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {settings.service_token}"},
            timeout=5.0,
            trust_env=False,
        )

    async def resolve(self, backend_id: int, token: str | None) -> PredictTarget:
        """The backend and its project; ``token`` (None for the service token) must reach them."""
        body = PredictTargetRequest(backend_id=backend_id, token=token).model_dump_json()
        headers = {"Content-Type": "application/json", **outgoing_request_headers()}
        try:
            response = await self._client.post("/internal/predict-targets", content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"cannot look the backend up: annotation API unreachable ({exc})",
            ) from None
        if response.status_code in _PASSED_ON:
            raise HTTPException(response.status_code, _detail(response))
        if response.status_code != 200:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"cannot look the backend up: annotation API answered {response.status_code}",
            )
        try:
            return PredictTarget.model_validate_json(response.content)
        except ValidationError:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "cannot look the backend up: unexpected answer from the API",
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return detail if isinstance(detail, str) else f"annotation API answered {response.status_code}"
