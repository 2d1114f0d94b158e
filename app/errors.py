"""One error hierarchy; one handler turns it into ``{"error": ClassName, "detail": ...}``."""

from __future__ import annotations

from typing import Any


class SynthaugError(Exception):
    """Base of every expected failure; ``status_code`` is what the API answers."""

    status_code = 500

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    def to_body(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "detail": self.detail, **self.extra}


class NotFound(SynthaugError):
    status_code = 404


class Unauthorized(SynthaugError):
    status_code = 401


class Conflict(SynthaugError):
    status_code = 409


class InvalidInput(SynthaugError):
    status_code = 422


class DatasetInvalid(InvalidInput):
    """The upload failed validation; the report lists every error with its row."""


class UploadTooLarge(SynthaugError):
    """The uploaded file is over the size limit; the body carries the report like DatasetInvalid."""

    status_code = 413


class UnknownModel(InvalidInput):
    """A base model name that the registry and the local caches do not know."""


class JobStateError(Conflict):
    """The job's state does not allow what was asked."""


class ServiceUnavailable(SynthaugError):
    status_code = 503
