from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse

from app.api import streams
from app.db.session import Database
from app.deps import DatabaseDep, PageDep, SessionDep, SettingsDep, TenantDep
from app.schemas.common import ListOf, binary_response, error_responses
from app.schemas.corpora import CorpusDetail, CorpusPublic, CorpusReportPublic, SamplePublic
from app.services import corpora, reports

router = APIRouter(prefix="/corpora", tags=["corpora"], responses=error_responses(401, 422, 503))

_EXPORT_TYPES = {"id": "int64", "record_id": "int64", "index": "int64", "seed": "int64", "sample_seed": "int64",
                 "synthetic": "bool"}


@router.get("", response_model=ListOf[CorpusPublic])
def list_corpora(session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return corpora.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.get("/{corpus_id}", response_model=CorpusDetail, responses=error_responses(404))
def get_corpus(corpus_id: str, session: SessionDep, tenant_id: TenantDep):
    return corpora.detail(session, tenant_id, corpus_id)


@router.get("/{corpus_id}/samples", response_model=ListOf[SamplePublic], responses=error_responses(404))
def list_samples(
    corpus_id: str,
    session: SessionDep,
    tenant_id: TenantDep,
    page: PageDep,
    label: Annotated[str | None, Query()] = None,
    status: Annotated[str, Query(description="accepted (the corpus), rejected (and why), or all")] = "accepted",
):
    return corpora.samples(
        session, tenant_id, corpus_id, limit=page.limit, cursor=page.cursor, label=label, status=status
    )


@router.get(
    "/{corpus_id}/report",
    response_model=CorpusReportPublic,
    responses=error_responses(404),
    description="The stored evidence of the corpus (computed when a generation into it succeeds): its status "
    "and, once succeeded, the report. 404 before any was requested.",
)
def get_report(corpus_id: str, session: SessionDep, tenant_id: TenantDep):
    return reports.status_of(session, reports.get(session, tenant_id, corpus_id))


@router.post("/{corpus_id}/report", response_model=CorpusReportPublic, status_code=202,
             responses=error_responses(404),
             description="Recompute the report (e.g. after another generation); one in progress is left to finish.")
def recompute_report(corpus_id: str, session: SessionDep, tenant_id: TenantDep):
    return reports.status_of(session, reports.request(session, tenant_id, corpus_id))


@router.get("/{corpus_id}/report.html", response_class=FileResponse,
            responses=binary_response("The report page.", "text/html") | error_responses(404, 409),
            description="The report as one self-contained HTML page with its charts; 409 until it is computed.")
def get_report_page(corpus_id: str, session: SessionDep, tenant_id: TenantDep, settings: SettingsDep):
    return FileResponse(reports.html_of(session, tenant_id, corpus_id, settings.resolved_artifact_dir),
                        media_type="text/html")


@router.get(
    "/{corpus_id}/export",
    response_class=StreamingResponse,
    responses=binary_response("The samples.", *corpora.EXPORT_FORMATS.values()) | error_responses(404),
    description="The accepted samples, streamed. `include_real=train` prepends the real train split of the "
    "corpus's data set (the augmented training set, with a `synthetic` column); any other value, or the "
    "parameter given twice, is refused.",
)
def export_corpus(
    corpus_id: str,
    db: DatabaseDep,
    session: SessionDep,
    tenant_id: TenantDep,
    format: Annotated[str, Query(description="jsonl, csv or parquet")] = "jsonl",
    label: Annotated[str | None, Query()] = None,
    # A list, so that a repeated parameter reaches the check instead of its last value winning.
    include_real: Annotated[
        list[str] | None, Query(description="train, once: add the real train split")
    ] = None,
):
    corpora.check_export(session, tenant_id, corpus_id, format, include_real or [])
    name = f"{corpus_id}{'-augmented' if include_real else ''}.{format}"
    return StreamingResponse(
        _export(db, corpus_id, format, label, bool(include_real)),
        media_type=corpora.EXPORT_FORMATS[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _export(db: Database, corpus_id: str, fmt: str, label: str | None, include_real: bool) -> Iterator[str | bytes]:
    # The rows are read chunk by chunk in short transactions of their own: the stream outlives the
    # request's transaction, and no transaction stays open while the client reads.
    if fmt == "jsonl" and db.engine.dialect.name == "postgresql":
        # Postgres writes the samples' JSON itself, on its own core: this process only sends.
        if include_real:
            yield from streams.jsonl(corpora.export_real_chunks(db, corpus_id, label))
        yield from streams.lines(corpora.export_sample_lines(db, corpus_id, label))
        return
    chunks = corpora.export_chunks(db, corpus_id, label, include_real)
    if fmt == "jsonl":
        yield from streams.jsonl(chunks)
    elif fmt == "csv":
        columns = [c for c in corpora.EXPORT_COLUMNS if c != "provenance"]
        yield from streams.csv_text(chunks, columns)
    else:
        yield from streams.parquet(chunks, corpora.EXPORT_COLUMNS, _EXPORT_TYPES)
