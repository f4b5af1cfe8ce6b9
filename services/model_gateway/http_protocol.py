"""uvicorn's httptools protocol with a cap on the request head (request line and headers).

httptools (llhttp) puts no limit on a head and uvicorn keeps what it parses, so 16 MB of headers cost the
gateway hundreds of MB before any application code could say no. This protocol counts the bytes received
while a head is incomplete, and measures each complete head; past ``LABELLOOP_MAX_REQUEST_HEAD_BYTES`` it
answers 431 and closes the connection (memory held at most the cap plus one socket read). Serve with
``--http services.model_gateway.http_protocol:HttpProtocol``.
"""

from __future__ import annotations

import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.model_gateway.settings import GatewaySettings


@functools.cache
def head_limit() -> int:
    """Read once per process: the protocol is built per connection, settings once."""
    return GatewaySettings().max_request_head_bytes


class _HeadTooLarge(Exception):
    pass


class HttpProtocol(HttpToolsProtocol):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit = head_limit()
        self._in_head = True
        self._head_bytes = 0
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limit:
            self._refused = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._limit and not self.transport.is_closing():
            self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        body = b"request line and headers over %d bytes" % self._limit
        self.url, self.headers = b"", []
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()
