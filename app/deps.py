"""Request dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from app.admission import ADMITTED_TENANT, tenant_of
from app.db.session import Database
from app.services import auth
from app.settings import Settings


# The dependencies that do no I/O are async: FastAPI runs a plain def on a thread, a hop each.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


async def get_database(request: Request) -> Database:
    return request.app.state.db


# Requests that only read: their transaction never takes SQLite's write lock.
READ_METHODS = frozenset({"GET", "HEAD"})


def get_session(request: Request, db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """The request owns the transaction: commit on success, roll back on any error. A GET or HEAD
    only reads; a GET that writes takes WriteSessionDep."""
    with db.transaction(write=request.method not in READ_METHODS) as session:
        yield session


def get_write_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """A write transaction whatever the method."""
    with db.transaction() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function": commit (and enqueue) before the response is sent, so a client holding a 201
# finds its object and a failed commit is an error response, not a 201 for nothing.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
WriteSessionDep = Annotated[Session, Depends(get_write_session, scope="function")]


async def get_tenant(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    # A request with a body was authenticated before it was read (app.admission).
    admitted = getattr(request.state, ADMITTED_TENANT, None)
    if admitted is not None:
        return admitted
    return await tenant_of(request.app.state, auth.presented_key(authorization, x_api_key))


TenantDep = Annotated[str, Depends(get_tenant)]


class PageParams:
    """``limit`` and ``cursor`` query parameters of every list."""

    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=500, description="Items per page.")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
    ) -> None:
        self.limit = limit
        self.cursor = cursor


PageDep = Annotated[PageParams, Depends()]
