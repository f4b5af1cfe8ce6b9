"""A backend's model versions over time and how well each version's predictions agreed with the
annotations people made afterwards.

Cost is bounded however big the project: agreement is computed over the tasks of the project's
``RECENT_ANNOTATIONS`` most recent annotations (index ``ix_annotation_project_id_id``), at most
``COMPARED_PER_VERSION`` of them per version, each joined by index to the backend's predictions of
that task and to the first annotation made after each prediction. Prediction counts are index-only
counts over ``ix_prediction_project_id_model_version_score``.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.annotation_api.ml_backends.agreement import task_agreement
from services.annotation_api.ml_backends.schemas import PerformanceOut, VersionPerformance
from services.annotation_api.ml_backends.service import get_backend

RECENT_ANNOTATIONS = 5000
COMPARED_PER_VERSION = 1000

_VERSIONS = text(
    """
    SELECT v.model_version, v.first_seen_at,
           (SELECT count(*) FROM prediction p
            WHERE p.project_id = :project AND p.model_version = v.model_version) AS predictions
    FROM ml_backend_version v WHERE v.ml_backend_id = :backend
    ORDER BY v.first_seen_at NULLS LAST, v.model_version
    """
)
# Per recently annotated task: each prediction of the backend, and the first annotation made after it.
_PAIRS = text(
    """
    WITH recent AS (
        SELECT DISTINCT task_id FROM (
            SELECT task_id FROM annotation WHERE project_id = :project ORDER BY id DESC LIMIT :window
        ) r
    )
    SELECT p.model_version, p.result AS predicted, a.result AS annotated
    FROM recent
    JOIN prediction p ON p.task_id = recent.task_id AND p.ml_backend_id = :backend
    CROSS JOIN LATERAL (
        SELECT x.id, x.result FROM annotation x
        WHERE x.task_id = p.task_id AND NOT x.was_cancelled AND x.created_at > p.created_at
        ORDER BY x.created_at, x.id LIMIT 1
    ) a
    ORDER BY a.id DESC
    """
)


async def performance(session: AsyncSession, backend_id: int) -> PerformanceOut:
    backend = await get_backend(session, backend_id)
    params = {"project": backend.project_id, "backend": backend.id}
    scores: dict[str, list[float]] = defaultdict(list)
    pairs = await session.execute(_PAIRS, {**params, "window": RECENT_ANNOTATIONS})
    for row in pairs:
        compared = scores[row.model_version]
        if len(compared) < COMPARED_PER_VERSION:
            compared.append(task_agreement(row.predicted, row.annotated))
    versions = []
    for row in await session.execute(_VERSIONS, params):
        compared = scores.get(row.model_version, [])
        versions.append(
            VersionPerformance(
                model_version=row.model_version,
                first_seen_at=row.first_seen_at,
                predictions=row.predictions,
                compared=len(compared),
                agreement=sum(compared) / len(compared) if compared else None,
            )
        )
    return PerformanceOut(backend=backend.id, versions=versions)
