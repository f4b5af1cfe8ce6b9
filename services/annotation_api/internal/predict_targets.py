"""``/internal/predict-targets``: the gateway's public predict names a stored backend by id; this says
how to call it, so the gateway stays stateless (service token only).

The public caller's own token comes along: a backend outside its organization is a 404, exactly as on
``/api/ml/{id}``, and an ML backend's token (which only reads its project) is refused.
"""

from __future__ import annotations

from fastapi import Depends

from services.annotation_api.auth.dependencies import INVALID_TOKEN, service_caller
from services.annotation_api.auth.service import token_for_key
from services.annotation_api.db import SessionDep
from services.annotation_api.errors import Forbidden, NotFound, Unauthorized
from services.annotation_api.ml_backends.service import backend_spec, project_ref
from services.annotation_api.models import MlBackend, Project
from services.annotation_api.routing import PrefixRouter
from shared.gateway_contract import PredictTarget, PredictTargetRequest

router = PrefixRouter(
    prefix="/internal/predict-targets", tags=["internal"], dependencies=[Depends(service_caller)]
)


@router.post("", response_model=PredictTarget)
async def predict_target(body: PredictTargetRequest, session: SessionDep) -> PredictTarget:
    """The backend and its project, if the caller's token reaches them."""
    organization_id: int | None = None
    if body.token is not None:
        found = await token_for_key(session, body.token)
        if found is None:
            raise Unauthorized(INVALID_TOKEN)
        user, token = found
        if token.project_id is not None:
            raise Forbidden("This token belongs to an ML backend: it cannot ask for predictions.")
        organization_id = user.organization_id
    backend = await session.get(MlBackend, body.backend_id)
    project = None if backend is None else await session.get(Project, backend.project_id)
    if project is None or (organization_id is not None and project.organization_id != organization_id):
        raise NotFound(f"ML backend {body.backend_id} not found.")
    assert backend is not None
    return PredictTarget(backend=backend_spec(backend), project=project_ref(project))
