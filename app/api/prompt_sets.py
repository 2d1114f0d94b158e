from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import PageDep, SessionDep, TenantDep, WriteSessionDep
from app.errors import InvalidInput
from app.schemas.common import ListOf, error_responses
from app.schemas.prompt_sets import PromptSetCreate, PromptSetPublic
from app.services import prompt_sets

router = APIRouter(prefix="/prompt-sets", tags=["prompt sets"], responses=error_responses(401, 422, 503))


# The GETs write: the built-in default prompt set is stored on first use.
@router.get("", response_model=ListOf[PromptSetPublic])
def list_prompt_sets(session: WriteSessionDep, tenant_id: TenantDep, page: PageDep):
    return prompt_sets.list_visible(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=PromptSetPublic, responses=error_responses(400, 413)
)
def create_prompt_set(body: PromptSetCreate, session: SessionDep, tenant_id: TenantDep):
    try:
        prompt_set = body.to_domain()
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    return prompt_sets.create(session, tenant_id, prompt_set)


@router.get("/{prompt_set_id}", response_model=PromptSetPublic, responses=error_responses(404))
def get_prompt_set(prompt_set_id: str, session: WriteSessionDep, tenant_id: TenantDep):
    return prompt_sets.get(session, tenant_id, prompt_set_id)
