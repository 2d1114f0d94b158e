from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.deps import DatabaseDep, PageDep, SessionDep, SettingsDep, TenantDep
from app.schemas.common import ListOf
from app.schemas.finetune_jobs import CheckpointPublic, FinetuneJobCreate, FinetuneJobPublic, JobEventPublic
from app.services import finetune_jobs, openai_tokens, token_counts

router = APIRouter(prefix="/finetune-jobs", tags=["fine-tune jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FinetuneJobPublic)
def create_job(
    body: FinetuneJobCreate,
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    if body.method == "openai":
        base_model = body.base_model or (settings.openai_models[0] if settings.openai_models else "")
    else:
        base_model = body.base_model or settings.default_base_model
    job, created = finetune_jobs.create(
        session,
        tenant_id,
        dataset_id=body.dataset_id,
        base_model=base_model,
        method=body.method,
        prompt_set_id=body.prompt_set_id,
        seed=body.seed,
        hyperparameters=body.hyperparameters,
        idempotency_key=idempotency_key,
        tokenizer_of=lambda name: token_counts.model_tokenizer(settings, name),
        openai_models=settings.openai_models,
        openai_counter_of=lambda name: openai_tokens.ChatTokenCounter.for_model(
            name, settings.resolved_cache_dir / "tiktoken").count,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return job


@router.get("", response_model=ListOf[FinetuneJobPublic])
def list_jobs(
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    status: Annotated[Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
                      | None, Query()] = None,
):
    return finetune_jobs.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor, status=status)


@router.get("/{job_id}", response_model=FinetuneJobPublic)
def get_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    return finetune_jobs.get(session, tenant_id, job_id)


@router.post("/{job_id}/cancel", response_model=FinetuneJobPublic)
def cancel_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    return finetune_jobs.cancel(session, tenant_id, job_id)


@router.post("/{job_id}/pause", response_model=FinetuneJobPublic)
def pause_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    """openai jobs: ask OpenAI to pause the running fine-tune (at the driver's next poll)."""
    return finetune_jobs.request_pause(session, tenant_id, job_id, paused=True)


@router.post("/{job_id}/resume", response_model=FinetuneJobPublic)
def resume_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    """openai jobs: ask OpenAI to resume a paused fine-tune."""
    return finetune_jobs.request_pause(session, tenant_id, job_id, paused=False)


@router.get("/{job_id}/checkpoints", response_model=ListOf[CheckpointPublic])
def list_checkpoints(job_id: str, session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return finetune_jobs.checkpoints(session, tenant_id, job_id, limit=page.limit, cursor=page.cursor)


@router.get(
    "/{job_id}/events",
    response_model=ListOf[JobEventPublic],
    description="Events after `after` (an event id). With `Accept: text/event-stream`, a server-sent "
    "event stream that ends when the job does.",
)
def list_events(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    session: SessionDep,
    tenant_id: TenantDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
):
    # One more than asked: next_cursor is null on the last page, as on every other list.
    events = finetune_jobs.events(session, tenant_id, job_id, after=after, limit=limit + 1)
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(
            finetune_jobs.stream_events(db, tenant_id, job_id, after), media_type="text/event-stream"
        )
    next_cursor = str(events[limit - 1].id) if len(events) > limit else None
    return {"data": events[:limit], "next_cursor": next_cursor}
