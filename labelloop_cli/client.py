"""The API over HTTP: every non-2xx becomes a ``CliError`` carrying the API's own message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from labelloop_cli.config import Target
from labelloop_cli.errors import CliError, ExitCode


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    text = detail if isinstance(detail, str) else response.text[:300] or response.reason_phrase
    return f"{response.request.method} {response.request.url.path}: {response.status_code} {text}"


class Api:
    def __init__(self, target: Target, timeout_s: float = 60.0) -> None:
        self.target = target
        self._client = httpx.Client(
            base_url=target.url,
            headers={"Authorization": f"Token {target.token}"},
            timeout=timeout_s,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._errors():
            response = self._client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise CliError(_message(response))
        return response.json() if response.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._errors(), self._client.stream("GET", path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise CliError(_message(response))
            yield response

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise CliError(
                f"cannot reach the API at {self.target.url}: {reason}", ExitCode.UNREACHABLE
            ) from None
