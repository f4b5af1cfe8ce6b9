"""Field types for strict JSON bodies (``ConfigDict(strict=True)``): JSON's types, JSON Schema's reading.

Strict models refuse what a lax one coerces and the spec forbids (``"1"`` or ``true`` for an integer,
``0`` for a boolean). JSON Schema counts ``5.0`` as an integer, though, and strict pydantic does not:
``JsonInt`` takes it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_whole_number)]
