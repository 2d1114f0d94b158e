from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app.deps import PageDep, SessionDep, TenantDep
from app.schemas.adapters import AdapterPublic
from app.schemas.common import ListOf, binary_response, error_responses
from app.services import adapters

router = APIRouter(prefix="/adapters", tags=["adapters"], responses=error_responses(401, 422, 503))


@router.get("", response_model=ListOf[AdapterPublic])
def list_adapters(session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return adapters.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.get("/{adapter_id}", response_model=AdapterPublic, responses=error_responses(404))
def get_adapter(adapter_id: str, session: SessionDep, tenant_id: TenantDep):
    return adapters.get(session, tenant_id, adapter_id)


@router.get(
    "/{adapter_id}/download",
    response_class=StreamingResponse,
    responses=binary_response("The adapter.", "application/gzip") | error_responses(404, 409),
    description="The PEFT adapter directory as a .tar.gz; `PeftModel.from_pretrained` loads the extracted folder.",
)
def download_adapter(adapter_id: str, session: SessionDep, tenant_id: TenantDep):
    adapter = adapters.get(session, tenant_id, adapter_id)
    return StreamingResponse(
        adapters.archive(adapter),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{adapter.id}.tar.gz"'},
    )
