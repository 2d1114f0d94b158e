"""Shapes shared by every resource."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ListOf(BaseModel, Generic[T]):
    """A page of items and the cursor of the next page (null on the last)."""

    data: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    """Every error response: the error's class name, what went wrong, and per error some context
    (a validation report, the failing checks, the offending fields)."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str


_ERROR_MEANINGS = {
    400: "The body does not parse (not UTF-8, a broken multipart form).",
    401: "Missing, invalid or revoked API key.",
    404: "No such object for this key's tenant.",
    409: "The object's state does not allow this.",
    413: "The request body is over the size limit.",
    422: "Invalid input; `detail` names the problem.",
    503: "The database (or broker) is unavailable; retry after `Retry-After` seconds.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring the error bodies ``codes`` may answer with."""
    return {code: {"model": ErrorBody, "description": _ERROR_MEANINGS[code]} for code in codes}


def binary_response(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a 200 whose body is a file of one of ``media_types``, not JSON."""
    content = {media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in media_types}
    return {200: {"description": description, "content": content}}
