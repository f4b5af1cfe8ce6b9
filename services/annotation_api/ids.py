"""Row ids and page numbers in requests: positive and within the Postgres column they are compared to.

A larger number would overflow in the driver and surface as a 500 (or a 400 naming no field); bounding
it in the schema turns it into the usual 400 naming the field. Projects, ML backends and users have
``integer`` ids (``SerialId``), everything else ``bigint`` (``RowId``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Final

from fastapi import Path, Query
from pydantic import Field
from sqlalchemy import BigInteger, BindParameter, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from shared.json_types import JsonInt

BIGINT_MAX: Final = 2**63 - 1
INT_MAX: Final = 2**31 - 1

RowId = Annotated[JsonInt, Field(ge=1, le=BIGINT_MAX)]
PathId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
SerialId = Annotated[JsonInt, Field(ge=1, le=INT_MAX)]
AnnotationId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="Annotation id.")]
JobId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="Job id.")]
PredictionId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="Prediction id.")]
MlBackendId = Annotated[int, Path(ge=1, le=INT_MAX, description="ML backend id.")]
PageNumber = Annotated[int, Query(ge=1, le=INT_MAX, description="1-based page number.")]
"""Any page times any allowed page size stays within ``bigint`` (the OFFSET)."""


def id_array(ids: Iterable[int]) -> BindParameter[list[int]]:
    """Ids as one ``bigint[]`` parameter (``= ANY(...)``): an IN list would hit the 32767-parameter cap."""
    array_type: ARRAY[int] = ARRAY(BigInteger)
    return bindparam(None, list(ids), type_=array_type)  # type: ignore[arg-type]
