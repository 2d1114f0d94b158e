from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.db.session import Database
from app.deps import DatabaseDep, PageDep, SessionDep, TenantDep
from app.schemas.common import ListOf
from app.schemas.corpora import CorpusDetail, CorpusPublic, SamplePublic
from app.services import corpora

router = APIRouter(prefix="/corpora", tags=["corpora"])


@router.get("", response_model=ListOf[CorpusPublic])
def list_corpora(session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return corpora.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.get("/{corpus_id}", response_model=CorpusDetail)
def get_corpus(corpus_id: str, session: SessionDep, tenant_id: TenantDep):
    return corpora.detail(session, tenant_id, corpus_id)


@router.get("/{corpus_id}/samples", response_model=ListOf[SamplePublic])
def list_samples(
    corpus_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    label: Annotated[str | None, Query()] = None,
):
    return corpora.samples(session, tenant_id, corpus_id, limit=page.limit, cursor=page.cursor, label=label)


@router.get("/{corpus_id}/export", response_class=StreamingResponse)
def export_corpus(
    corpus_id: str,
    db: DatabaseDep,
    session: SessionDep,
    tenant_id: TenantDep,
    format: Annotated[str, Query(description="jsonl or csv")] = "jsonl",
    label: Annotated[str | None, Query()] = None,
):
    corpora.check_export(session, tenant_id, corpus_id, format)
    return StreamingResponse(
        _export(db, corpus_id, format, label),
        media_type=corpora.EXPORT_FORMATS[format],
        headers={"Content-Disposition": f'attachment; filename="{corpus_id}.{format}"'},
    )


def _export(db: Database, corpus_id: str, fmt: str, label: str | None) -> Iterator[str]:
    # Its own session: the stream outlives the request's transaction.
    with db.transaction() as session:
        yield from corpora.export(session, corpus_id, fmt, label)
