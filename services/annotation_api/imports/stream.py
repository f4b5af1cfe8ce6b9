"""Split a streamed JSON list into batches of whole items, each parsed by orjson on its own.

An import body may be hundreds of megabytes; parsed whole it costs ~10x its size in Python objects.
This scanner only tracks strings and bracket depth to find the commas between top-level items (a run of
items nested at most _FAST_DEPTH deep is skipped by one regex match, so the Python loop only turns for
deeper items, once per bracket, never per byte), and hands out ``[item, …]`` slices of about ``batch_bytes``. Whether each slice is valid JSON is
orjson's call: the slices joined by commas are the body's list, so valid slices mean a valid body.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from services.annotation_api.errors import BadRequest

_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_FAST_DEPTH = 8


def _nested(levels: int) -> bytes:
    """A list or object nested at most ``levels`` deep (Python's re cannot recurse, so it is unrolled)."""
    inner = rb'[^"\[\]{}]++|' + _STRING
    if levels > 1:
        inner += rb"|" + _nested(levels - 1)
    return rb"(?:\{(?:" + inner + rb")*+\}|\[(?:" + inner + rb")*+\])"


# A run of complete top-level items nested at most _FAST_DEPTH deep, each followed by its comma.
_FLAT_ITEMS = re.compile(
    rb"(?:\s*+(?:" + _nested(_FAST_DEPTH) + rb"|" + _STRING + rb'|[^"\[\]{},]++)\s*+,)*+', re.DOTALL
)
# Everything up to the next bracket, quote or (in the list itself) comma, strings skipped whole.
_INNER = re.compile(rb'(?:[^"\[\]{}]++|' + _STRING + rb")*+", re.DOTALL)
_TOP = re.compile(rb'(?:[^"\[\]{},]++|' + _STRING + rb")*+", re.DOTALL)
_STRING_REST = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)
_WHITESPACE = b" \t\r\n"
_QUOTE, _COMMA, _CLOSE_LIST = ord('"'), ord(","), ord("]")
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_FIRST_CHAR_TYPE = {ord("{"): "dict", ord('"'): "str", ord("t"): "bool", ord("f"): "bool", ord("n"): "null"}


class ListSplitter:
    """Feed bytes with ``feed``; ``batches`` returns the complete batches found so far and ``finish``
    the rest. Raises a 400 on ``field`` for a body that is not a JSON list of ``noun`` (nor an empty
    one, unless ``allow_empty``)."""

    def __init__(
        self, batch_bytes: int, *, noun: str = "tasks", field: str = "tasks", allow_empty: bool = False
    ) -> None:
        self.batch_bytes = batch_bytes
        self.noun = noun
        self.field = field
        self.allow_empty = allow_empty
        self._buf = bytearray()
        self._pos = 0  # next byte to scan
        self._start = 0  # first byte of the batch being collected (after the last boundary comma)
        self._offset = 0  # bytes dropped from the front of the buffer
        self._depth = 0  # 0: before the list, 1: in the list, -1: after it
        self._in_string = False
        self._items = 0  # batches handed out (a batch is never empty)
        self._last = b""  # the batch the closing bracket ended

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(f"{self.field}: {message}", field=self.field)

    @property
    def buffered(self) -> int:
        """Bytes not scanned yet."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._depth < 0 and data.strip(_WHITESPACE):
            raise self._bad("malformed JSON: characters after the end of the list")
        if self._depth >= 0:
            self._buf += data

    def batches(self) -> list[bytes]:
        """Scan what was fed; the batches of at least ``batch_bytes`` completed meanwhile."""
        out: list[bytes] = []
        buf = self._buf
        if self._depth == 0 and not self._open_list():
            return out
        size = len(buf)
        pos = self._pos
        depth = self._depth
        while pos < size and depth > 0:
            if self._in_string:
                end = _STRING_REST.match(buf, pos).end()  # type: ignore[union-attr]
                if end >= size or buf[end] != _QUOTE:
                    pos = end
                    break
                pos = end + 1
                self._in_string = False
                continue
            if depth == 1:
                flat_end = _FLAT_ITEMS.match(buf, pos).end()  # type: ignore[union-attr]
                if flat_end > pos:  # ends just after a comma
                    pos = flat_end
                    if pos - 1 - self._start >= self.batch_bytes:
                        out.append(self._cut(pos - 1))
                end = _TOP.match(buf, pos).end()  # type: ignore[union-attr]
            else:
                end = _INNER.match(buf, pos).end()  # type: ignore[union-attr]
            if end >= size:
                pos = end
                break
            char = buf[end]
            pos = end + 1
            if char == _QUOTE:
                self._in_string = True
            elif char in _OPEN:
                depth += 1
            elif char in _CLOSE:
                depth -= 1
                if depth == 0:
                    if char != _CLOSE_LIST:
                        raise self._bad("malformed JSON: unbalanced brackets")
                    self._last = self._cut(end)
                    depth = -1
                    if buf[pos:].strip(_WHITESPACE):
                        raise self._bad("malformed JSON: characters after the end of the list")
            elif pos - 1 - self._start >= self.batch_bytes:  # a comma between items
                out.append(self._cut(pos - 1))
        self._pos = pos
        self._depth = depth
        self._compact()
        return out

    def finish(self) -> list[bytes]:
        """The remaining batches once the whole body was fed."""
        out = self.batches()
        if self._depth == 0:
            raise self._bad(f"the body is empty; send a JSON list of {self.noun}")
        if self._depth > 0:
            raise self._bad("malformed JSON: the body ends before the list is closed")
        if not self._last:
            if self.allow_empty:
                return out
            raise self._bad("the list is empty; nothing to import")
        return [*out, self._last]

    def _open_list(self) -> bool:
        """Skip whitespace to the list's ``[``; False while only whitespace arrived."""
        stripped = self._buf.lstrip(_WHITESPACE)
        if not stripped:
            self._buf.clear()
            return False
        if stripped[0] != ord("["):
            kind = _FIRST_CHAR_TYPE.get(stripped[0], "a number or malformed JSON")
            raise self._bad(f"must be a JSON list of {self.noun}, got {kind}")
        self._offset += len(self._buf) - len(stripped) + 1
        del self._buf[: len(self._buf) - len(stripped) + 1]
        self._depth = 1
        return True

    def _cut(self, end: int) -> bytes:
        """The batch ``[start:end]`` wrapped as a list (empty for an empty list); the next batch starts
        after ``end`` (a comma, or the list's closing bracket)."""
        content = bytes(self._buf[self._start : end])
        first = self._items == 0
        self._start = end + 1
        if not content.strip(_WHITESPACE):
            if first and self._buf[end] == _CLOSE_LIST:
                return b""
            raise self._bad(f"malformed JSON: a list item is missing near byte {self._offset + end + 1}")
        self._items += 1
        return b"[" + content + b"]"

    def _compact(self) -> None:
        """Drop the bytes of batches already handed out."""
        if self._start > 0:
            del self._buf[: self._start]
            self._offset += self._start
            self._pos -= self._start
            self._start = 0


async def body_pieces(body: AsyncIterator[bytes], piece_bytes: int) -> AsyncIterator[tuple[bytes, bool]]:
    """The body re-cut into ``(piece, last)`` of at least ``piece_bytes`` (the last one may be shorter or
    empty): one thread hand-off per piece, not per network read."""
    pending: list[bytes] = []
    pending_bytes = 0
    last = False
    while not last:
        chunk = await anext(body, None)
        last = chunk is None
        if chunk:
            pending.append(chunk)
            pending_bytes += len(chunk)
        if last or pending_bytes >= piece_bytes:
            data = b"".join(pending)
            pending.clear()
            pending_bytes = 0
            yield data, last
