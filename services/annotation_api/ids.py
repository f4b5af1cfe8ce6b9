"""Row ids in requests: positive and within Postgres ``bigint``.

A larger number would overflow in the driver and surface as a 500; bounding it in the schema turns
it into the usual 400 naming the field (or 404 for a path id).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Final

from fastapi import Path
from pydantic import Field
from sqlalchemy import BigInteger, BindParameter, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

BIGINT_MAX: Final = 2**63 - 1

RowId = Annotated[int, Field(ge=1, le=BIGINT_MAX)]
PathId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


def id_array(ids: Iterable[int]) -> BindParameter[list[int]]:
    """Ids as one ``bigint[]`` parameter (``= ANY(...)``): an IN list would hit the 32767-parameter cap."""
    array_type: ARRAY[int] = ARRAY(BigInteger)
    return bindparam(None, list(ids), type_=array_type)  # type: ignore[arg-type]
