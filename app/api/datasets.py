from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from app.deps import PageDep, SessionDep, SettingsDep, TenantDep
from app.schemas.common import ListOf, error_responses
from app.domain.ingestion import ArchiveLimits
from app.domain.ingestion.chat_layout import DEFAULT_LABEL_MAP, DEFAULT_PARTICIPANT_PATTERN
from app.schemas.datasets import DatasetPublic, RecordPublic, chat_options, column_mapping
from app.services import datasets, token_counts

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=error_responses(401, 422, 503))

UPLOAD_DESCRIPTION = """Upload a table (CSV or JSONL: participant, text, label[, split]) or CHAT transcripts
(one `.cha` file, or a `.zip` of folders of `.cha` files with optional metadata files). The format comes from
the file name, else from the content. The upload is validated completely: 201 with the dataset, or 422 with a
report whose every error names its row (for CHAT: the file, a path inside the zip, and the line), and nothing
is stored.

CHAT: one record per file, the chosen speaker's utterances joined. Label: from a folder named in `label_map`,
else a metadata file (CSV, or ADReSS `*_meta_data.txt`) listing the file or participant, else the `@ID` group
(`Control` -> control; `ProbableAD`, `PossibleAD`, `MCI`, `Vascular`, `Memory`, `Dementia` -> impaired).
Participant: `participant_pattern` in the file name (Pitt `001-0.cha` and `001-2.cha` are participant 001).
Split: a `train`/`test` folder in the path, else assigned by participant like a table without a split column.
A zip is refused (422) for absolute or `..` paths, symbolic links, nested archives, or more files or
uncompressed bytes than the server allows. A file over the upload limit is a 413 (`UploadTooLarge`); the report
lists its first errors and warnings and counts them all (`errors_total`, `errors_truncated`)."""


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic, description=UPLOAD_DESCRIPTION,
             responses=error_responses(400, 413))
def create_dataset(
    session: SessionDep,
    settings: SettingsDep,
    tenant_id: TenantDep,
    file: Annotated[UploadFile, File(description="CSV or JSONL table, a CHAT .cha file, or a .zip of .cha files.")],
    name: Annotated[str | None, Form(max_length=200)] = None,
    participant_column: Annotated[str, Form()] = "id",
    text_column: Annotated[str, Form()] = "text",
    label_column: Annotated[str, Form()] = "label",
    split_column: Annotated[str, Form()] = "split",
    label_values: Annotated[str | None, Form(description="JSON: raw label value -> control|impaired.")] = None,
    split_seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
    base_model: Annotated[str | None, Form(description="Tokenizer for token-length stats.")] = None,
    style: Annotated[
        Literal["verbatim", "clean"],
        Form(description="CHAT: verbatim keeps disfluencies as said (fillers, repetitions, pauses); "
                         "clean keeps the words alone."),
    ] = "verbatim",
    speaker: Annotated[str, Form(description="CHAT: speaker code whose utterances are kept (INV is dropped).")] = "PAR",
    keep_fragments: Annotated[bool, Form(description="CHAT verbatim: keep word fragments (&+ja -> ja).")] = True,
    pauses: Annotated[
        Literal["ellipsis", "drop"], Form(description="CHAT verbatim: pauses (.) (..) (...) as '...', or dropped.")
    ] = "ellipsis",
    unintelligible: Annotated[
        Literal["marker", "drop"], Form(description="CHAT verbatim: xxx/yyy/www kept as 'xxx', or dropped.")
    ] = "marker",
    label_map: Annotated[
        str | None,
        Form(description=f"CHAT: JSON, folder name -> control|impaired (replaces the default "
                         f"{json.dumps(DEFAULT_LABEL_MAP)}); folder names compare ignoring case."),
    ] = None,
    participant_pattern: Annotated[
        str | None,
        Form(max_length=200, description=f"CHAT: regular expression with one group, searched in each file's "
                                         f"name, that captures the participant id (default "
                                         f"{DEFAULT_PARTICIPANT_PATTERN!r}: 001-2.cha -> 001, S001.cha -> S001)."),
    ] = None,
):
    # Sync route (runs in the threadpool): parsing and the insert must not block the event loop.
    mapping = column_mapping(participant_column, text_column, label_column, split_column, label_values)
    chat = chat_options(
        {"style": style, "speaker": speaker, "keep_fragments": keep_fragments, "pauses": pauses,
         "unintelligible": unintelligible},
        label_map, participant_pattern,
    )
    return datasets.create(
        session,
        tenant_id,
        filename=file.filename or "upload",
        stream=file.file,
        mapping=mapping,
        name=name,
        split_seed=split_seed,
        max_bytes=settings.max_upload_bytes,
        chat=chat,
        archive=ArchiveLimits(settings.max_archive_files, settings.max_archive_bytes),
        count_tokens=token_counts.counter(settings, base_model or settings.default_base_model),
        max_report_issues=settings.max_report_issues,
    )


@router.get("", response_model=ListOf[DatasetPublic])
def list_datasets(session: SessionDep, tenant_id: TenantDep, page: PageDep):
    return datasets.list_for(session, tenant_id, limit=page.limit, cursor=page.cursor)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=error_responses(404))
def get_dataset(dataset_id: str, session: SessionDep, tenant_id: TenantDep):
    return datasets.get(session, tenant_id, dataset_id)


@router.get("/{dataset_id}/records", response_model=ListOf[RecordPublic], responses=error_responses(404))
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
