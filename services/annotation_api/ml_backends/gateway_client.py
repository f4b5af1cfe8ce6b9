"""The annotation API's client of the model gateway (the only way the API reaches ML backends).

One pooled ``httpx.AsyncClient`` per API process, carrying the service token. A gateway that cannot be
reached, refuses the service token or answers garbage is an ``UpstreamError`` (502) naming what went
wrong, never a 500 and never mistaken for a verdict about the backend.
"""

from __future__ import annotations

from typing import TypeVar

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from services.annotation_api.errors import UpstreamError
from services.annotation_api.settings import ApiSettings
from shared.gateway_contract import (
    CheckBackendRequest,
    CheckBackendResult,
    PredictTasksRequest,
    PredictTasksResult,
)
from shared.logging import outgoing_request_headers

ResultT = TypeVar("ResultT", bound=BaseModel)

# The gateway applies the backend's own timeouts and retries; this only bounds a gateway that hangs.
_GATEWAY_TIMEOUT = httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=30.0)


class GatewayUnavailable(UpstreamError):
    status_code = 503


class GatewayClient:
    def __init__(self, settings: ApiSettings) -> None:
        self.base_url = settings.gateway_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {settings.service_token}"},
            timeout=_GATEWAY_TIMEOUT,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: BaseModel, result_type: type[ResultT]) -> ResultT:
        try:
            response = await self._http.post(
                path,
                content=body.model_dump_json(),
                headers={"Content-Type": "application/json", **outgoing_request_headers()},
            )
        except httpx.TimeoutException as exc:
            raise GatewayUnavailable(
                f"Model gateway at {self.base_url} did not answer in time ({type(exc).__name__})."
            ) from exc
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(
                f"Model gateway at {self.base_url} is unreachable ({type(exc).__name__}: {exc})."
            ) from exc
        if response.status_code in (401, 403):
            raise UpstreamError(
                "Model gateway refused the API's service credential (check LABELLOOP_SERVICE_TOKEN)."
            )
        if response.status_code != 200:
            raise UpstreamError(
                f"Model gateway answered {response.status_code} on {path}: {response.text[:300]}"
            )
        try:
            return result_type.model_validate_json(response.content)
        except ValidationError as exc:
            raise UpstreamError(f"Model gateway sent an unexpected answer on {path}.") from exc

    async def check(self, request: CheckBackendRequest) -> CheckBackendResult:
        return await self._post("/internal/backends/check", request, CheckBackendResult)

    async def predict(self, request: PredictTasksRequest) -> PredictTasksResult:
        return await self._post("/internal/predict", request, PredictTasksResult)


def gateway_client(app: FastAPI) -> GatewayClient:
    """The process's gateway client, created on first use (tests start the API without a gateway)."""
    client: GatewayClient | None = getattr(app.state, "gateway_client", None)
    if client is None:
        client = GatewayClient(app.state.settings)
        app.state.gateway_client = client
    return client


async def close_gateway_client(app: FastAPI) -> None:
    client: GatewayClient | None = getattr(app.state, "gateway_client", None)
    if client is not None:
        await client.aclose()
        app.state.gateway_client = None
