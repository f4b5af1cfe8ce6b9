"""JSON values our services cannot pass on: found once at the edge, named by their field path.

Python's ``json`` accepts what orjson, Postgres and ML backends cannot take: lone UTF-16 surrogates
(``"\\ud800"``), integers beyond 64 bits (and numbers like ``1e20`` that Postgres turns into them),
``NaN`` / ``Infinity`` / ``1e400``, nesting deeper than orjson writes (254 levels, less what we wrap
around a value), and (for Postgres) NUL characters. Left in, they
fail later as a 500, or turn silently into ``null``.
"""

from __future__ import annotations

import math
from typing import Any

_INT_MIN = -(2**63)
_INT_LIMIT = 2**64  # orjson writes unsigned 64-bit integers too
_FLOAT_LIMIT = float(2**63)
"""Postgres keeps ``1e20`` in jsonb as the integer ``100000000000000000000``: it reads back as an integer
beyond 64 bits, which orjson (the API, the gateway, the worker) cannot write. Such numbers are refused."""
MAX_DEPTH = 200
"""Deepest nesting accepted: orjson refuses beyond 254, and a value is later wrapped in a few levels
(an event payload, a chunk of tasks)."""


def text_problem(text: str, *, nul: bool = True) -> str | None:
    """Why ``text`` cannot be passed on, or None. ``nul``: refuse NUL (Postgres cannot store it)."""
    if nul and "\x00" in text:
        return "contains a NUL character (\\u0000), which Postgres cannot store"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode text"
    return None


def value_problem(value: Any, *, nul: bool = True) -> str | None:
    """Why a JSON scalar cannot be passed on, or None."""
    if isinstance(value, str):
        return text_problem(value, nul=nul)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value < _INT_LIMIT else "is an integer beyond 64 bits"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "is not a finite number (NaN, Infinity or out of range)"
        if abs(value) >= _FLOAT_LIMIT:
            return (
                "is a number of magnitude 2^63 or more, which Postgres would keep as an integer "
                "beyond 64 bits; send it as a string"
            )
    return None


def find_bad_value(value: Any, path: str = "", *, nul: bool = True) -> tuple[str, str] | None:
    """``(field path, problem)`` of the first value or object key that cannot be passed on, else None.

    The path is dotted (``data.items.3.text``) and printable: NUL and surrogates in keys are escaped.
    Paths are only built once something is found: the walk of a good body allocates nothing.
    """
    found = _find(value, 0, nul)
    if found is None:
        return None
    parts, problem = found
    if problem.startswith("is nested deeper"):
        del parts[:-3]  # named by its outer fields: a path 200 keys long would not help anyone
    where = ".".join([path, *reversed(parts)] if path else reversed(parts))
    return printable(where or "body"), problem


def _find(node: Any, depth: int, nul: bool) -> tuple[list[str], str] | None:
    """The reversed path and problem of the first bad value under ``node`` (recursion is bounded by
    MAX_DEPTH, and cheaper than an explicit stack of paths)."""
    if isinstance(node, dict):
        if depth >= MAX_DEPTH:
            return [], f"is nested deeper than {MAX_DEPTH} levels"
        for key, item in node.items():
            if isinstance(key, str) and (problem := text_problem(key, nul=nul)):
                return [key], f"key {problem}"
            found = _find(item, depth + 1, nul)
            if found is not None:
                found[0].append(str(key))
                return found
        return None
    if isinstance(node, list):
        if depth >= MAX_DEPTH:
            return [], f"is nested deeper than {MAX_DEPTH} levels"
        for index, item in enumerate(node):
            found = _find(item, depth + 1, nul)
            if found is not None:
                found[0].append(str(index))
                return found
        return None
    problem = value_problem(node, nul=nul)
    return None if problem is None else ([], problem)


def printable(path: str) -> str:
    """A field path fit for an error message: NUL and lone surrogates escaped."""
    return path.encode(errors="backslashreplace").decode().replace("\x00", "\\u0000")
