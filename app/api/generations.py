from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import SessionDep, SettingsDep, TenantDep
from app.schemas.common import error_responses
from app.schemas.generations import GenerateRequest, GenerationPublic
from app.services import generations

router = APIRouter(tags=["generations"], responses=error_responses(401, 422, 503))


@router.post(
    "/generate", status_code=status.HTTP_202_ACCEPTED, response_model=GenerationPublic,
    responses=error_responses(400, 404, 413),
)
def generate(body: GenerateRequest, session: SessionDep, settings: SettingsDep, tenant_id: TenantDep):
    return generations.create(
        session,
        tenant_id,
        adapter_id=body.adapter_id,
        counts=body.label_counts(),
        params=body.sampling_params(),
        filters=body.filters,
        sampler=body.sampler,
        settings=settings,
        batch_size=body.batch_size,
        corpus_id=body.corpus_id,
    )


@router.get("/generations/{generation_id}", response_model=GenerationPublic, responses=error_responses(404))
def get_generation(generation_id: str, session: SessionDep, tenant_id: TenantDep):
    return generations.get(session, tenant_id, generation_id)


@router.post(
    "/generations/{generation_id}/cancel", response_model=GenerationPublic, responses=error_responses(404, 409)
)
def cancel_generation(generation_id: str, session: SessionDep, tenant_id: TenantDep):
    """A queued generation is cancelled at once; a running one stops before its next chunk and keeps
    the samples it has stored."""
    return generations.cancel(session, tenant_id, generation_id)
