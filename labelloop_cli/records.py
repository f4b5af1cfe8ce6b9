"""Task records from JSON, JSONL or CSV files of any size, read incrementally (constant memory).

A JSON array is parsed item by item with ijson, JSONL line by line, CSV row by row (each row a flat
data dict, like Label Studio's CSV import). ``BytesRead`` tells the progress bar how far the file is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Literal

import ijson
import orjson

from labelloop_cli.errors import CliError, ExitCode

Format = Literal["json", "jsonl", "csv"]


class BytesRead(io.RawIOBase):
    """A binary file that counts what was read from it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def detect(path: Path, given: str | None) -> Format:
    name = (given or path.suffix.lstrip(".")).lower()
    if name == "ndjson":
        name = "jsonl"
    if name not in ("json", "jsonl", "csv"):
        raise CliError(f"{path}: unknown format {name!r}; use --format json, jsonl or csv", ExitCode.USAGE)
    return name  # type: ignore[return-value]  # checked just above


def _plain(value: Any) -> Any:
    """ijson gives Decimal for non-integers; JSON floats are what the API expects."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def read(source: BytesRead, fmt: Format, path: Path) -> Iterator[dict[str, Any]]:
    """Each record in order; a malformed one stops the import with its position."""
    position = 0
    try:
        if fmt == "json":
            for position, item in enumerate(ijson.items(source, "item"), start=1):
                yield _record(_plain(item), path, position)
        elif fmt == "jsonl":
            for line in io.BufferedReader(source):
                if line.strip():
                    position += 1
                    yield _record(orjson.loads(line), path, position)
        else:
            text = io.TextIOWrapper(io.BufferedReader(source), encoding="utf-8-sig", newline="")
            for row in csv.DictReader(text):
                position += 1
                yield dict(row)
    except (ijson.JSONError, orjson.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise CliError(f"{path}: record {position + 1} is not valid {fmt}: {exc}", ExitCode.USAGE) from None


def _record(item: Any, path: Path, position: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise CliError(f"{path}: record {position} is not a JSON object", ExitCode.USAGE)
    return item
