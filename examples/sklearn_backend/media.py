"""Where task media and training data come from: inline ``data:`` URLs and the annotation server.

``/setup`` tells a backend the annotation server's URL and an access token. Media URLs are fetched
with that token only when they point under that server (or are relative to it), so a task cannot make
the backend send its credentials, or requests, anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
import orjson

MAX_MEDIA_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AnnotationServer:
    """The annotation server of one project, as /setup (or the upstream SDK's environment) named it."""

    hostname: str
    access_token: str = field(repr=False)

    @property
    def base(self) -> str:
        return self.hostname.rstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.access_token}"} if self.access_token else {}

    def owns(self, url: str) -> bool:
        """True when ``url`` is on this server (same scheme, host and port)."""
        mine, other = urlsplit(self.base), urlsplit(url)
        return (mine.scheme, mine.netloc) == (other.scheme, other.netloc)

    async def export(self, client: httpx.AsyncClient, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (Label Studio's JSON export)."""
        response = await client.get(
            f"{self.base}/api/projects/{project_id}/export",
            params={"exportType": "JSON"},
            headers=self.headers,
        )
        response.raise_for_status()
        tasks = orjson.loads(response.content)
        if not isinstance(tasks, list):
            raise ValueError(f"export of project {project_id} is a JSON {type(tasks).__name__}, not a list")
        return tasks


def server_from_env() -> AnnotationServer | None:
    """The upstream SDK's fallback: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, when /setup is not known."""
    url = os.environ.get("LABEL_STUDIO_URL")
    return AnnotationServer(url, os.environ.get("LABEL_STUDIO_API_KEY", "")) if url else None


def decode_data_url(url: str) -> bytes:
    """The bytes of a ``data:[<mime>][;base64],<payload>`` URL."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError("data URL has no ',' before its payload")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"data URL is not valid base64: {exc}") from exc
    return unquote_to_bytes(payload)


async def load_media(url: str, server: AnnotationServer | None, client: httpx.AsyncClient) -> bytes:
    """The content behind a task's media URL: inline, or from the annotation server with its token."""
    if url.startswith("data:"):
        content = decode_data_url(url)
    else:
        if server is None:
            raise ValueError(f"cannot fetch {url[:100]!r}: no annotation server known (call /setup first)")
        absolute = server.base + url if url.startswith("/") else url
        if not server.owns(absolute):
            raise ValueError(f"media URL {url[:100]!r} is not on the annotation server {server.base!r}")
        async with client.stream("GET", absolute, headers=server.headers) as response:
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_MEDIA_BYTES:
                    raise ValueError(f"media at {url[:100]!r} is larger than {MAX_MEDIA_BYTES} bytes")
                chunks.append(chunk)
            content = b"".join(chunks)
    if len(content) > MAX_MEDIA_BYTES:
        raise ValueError(f"media is larger than {MAX_MEDIA_BYTES} bytes")
    return content
