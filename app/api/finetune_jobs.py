from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from app.db.pagination import MAX_INT_KEY
from app.deps import DatabaseDep, PageDep, SessionDep, SettingsDep, TenantDep
from app.schemas.common import ListOf, error_responses
from app.schemas.finetune_jobs import CheckpointPublic, FinetuneJobCreate, FinetuneJobPublic, JobEventPublic
from app.services import event_streams, finetune_jobs, openai_tokens, token_counts

router = APIRouter(
    prefix="/finetune-jobs", tags=["fine-tune jobs"], responses=error_responses(401, 422, 503)
)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=FinetuneJobPublic,
             responses={200: {"model": FinetuneJobPublic, "description": "The job the Idempotency-Key made before."}}
             | error_responses(400, 404, 409, 413))
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
        max_batch_tokens=settings.max_train_batch_tokens,
        model_roots=settings.base_model_roots,
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


@router.get("/{job_id}", response_model=FinetuneJobPublic, responses=error_responses(404))
def get_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    return finetune_jobs.get(session, tenant_id, job_id)


@router.post("/{job_id}/cancel", response_model=FinetuneJobPublic, responses=error_responses(404, 409))
def cancel_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    return finetune_jobs.cancel(session, tenant_id, job_id)


@router.post("/{job_id}/pause", response_model=FinetuneJobPublic, responses=error_responses(404, 409))
def pause_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    """openai jobs: ask OpenAI to pause the running fine-tune (at the driver's next poll)."""
    return finetune_jobs.request_pause(session, tenant_id, job_id, paused=True)


@router.post("/{job_id}/resume", response_model=FinetuneJobPublic, responses=error_responses(404, 409))
def resume_job(job_id: str, session: SessionDep, tenant_id: TenantDep):
    """openai jobs: ask OpenAI to resume a paused fine-tune."""
    return finetune_jobs.request_pause(session, tenant_id, job_id, paused=False)


@router.get("/{job_id}/checkpoints", response_model=ListOf[CheckpointPublic], responses=error_responses(404))
def list_checkpoints(job_id: str, session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return finetune_jobs.checkpoints(session, tenant_id, job_id, limit=page.limit, cursor=page.cursor)


@router.get(
    "/{job_id}/events",
    response_model=ListOf[JobEventPublic],
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}} | error_responses(404),
    description="Events after `after` (an event id). With `Accept: text/event-stream`, a server-sent "
    "event stream that ends with an `end` event when the job does, or with a `reconnect` event after "
    "SYNTHAUG_EVENT_STREAM_MAX_S (resume with `Last-Event-ID`, which is read as `after`); "
    "`: keep-alive` comments arrive while nothing happens.",
)
def list_events(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=MAX_INT_KEY)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    last_event_id: Annotated[int | None, Header(ge=0, le=MAX_INT_KEY, description="Resume a stream after "
                                                "this event id (sent by EventSource on reconnect).")] = None,
):
    after = max(after, last_event_id or 0)
    # One more than asked: next_cursor is null on the last page, as on every other list.
    events = finetune_jobs.events(session, tenant_id, job_id, after=after, limit=limit + 1)
    if "text/event-stream" in request.headers.get("accept", ""):
        limits = event_streams.StreamLimits(
            settings.event_stream_poll_s, settings.event_stream_keepalive_s, settings.event_stream_max_s)
        return StreamingResponse(
            event_streams.job_events(db, tenant_id, job_id, after, limits, request.is_disconnected),
            media_type="text/event-stream",
        )
    next_cursor = str(events[limit - 1].id) if len(events) > limit else None
    return {"data": events[:limit], "next_cursor": next_cursor}
