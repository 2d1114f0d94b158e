from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from app.deps import PageDep, SessionDep, SettingsDep, TenantDep
from app.schemas.common import ListOf
from app.schemas.datasets import DatasetPublic, RecordPublic, column_mapping
from app.services import datasets, token_counts

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
def create_dataset(
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    file: Annotated[UploadFile, File(description="CSV or JSONL of participant, text, label[, split].")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    participant_column: Annotated[str, Form()] = "id",
    text_column: Annotated[str, Form()] = "text",
    label_column: Annotated[str, Form()] = "label",
    split_column: Annotated[str, Form()] = "split",
    label_values: Annotated[str | None, Form(description="JSON: raw label value -> control|impaired.")] = None,
    split_seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
    base_model: Annotated[str | None, Form(description="Tokenizer for token-length stats.")] = None,
):
    # Sync route (runs in the threadpool): parsing and the insert must not block the event loop.
    data = file.file.read(settings.max_upload_bytes + 1)
    mapping = column_mapping(participant_column, text_column, label_column, split_column, label_values)
    return datasets.create(
        session,
        tenant_id,
        filename=file.filename or "upload",
        data=data,
        mapping=mapping,
        name=name,
        split_seed=split_seed,
        max_bytes=settings.max_upload_bytes,
        count_tokens=token_counts.counter(settings, base_model or settings.default_base_model),
    )


@router.get("", response_model=ListOf[DatasetPublic])
def list_datasets(session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return datasets.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, session: SessionDep, tenant_id: TenantDep):
    return datasets.get(session, tenant_id, dataset_id)


@router.get("/{dataset_id}/records", response_model=ListOf[RecordPublic])
def list_records(
    dataset_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    split: Annotated[str | None, Query()] = None,
    label: Annotated[str | None, Query()] = None,
):
    return datasets.records(
        session, tenant_id, dataset_id, limit=page.limit, cursor=page.cursor, split=split, label=label
    )
