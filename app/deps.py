"""Request dependencies as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from app.db.session import Database
from app.services import auth
from app.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    """The request owns the transaction: commit on success, roll back on any error."""
    with db.transaction() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]
# scope="function": commit (and enqueue) before the response is sent, so a client holding a 201
# finds its object and a failed commit is an error response, not a 201 for nothing.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_tenant(
    session: SessionDep,
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    raw = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        raw = authorization[7:].strip()
    return auth.authenticate(session, raw, settings.key_pepper.get_secret_value())


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
