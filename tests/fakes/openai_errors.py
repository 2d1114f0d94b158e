"""The fake OpenAI API's errors: ``{"error": {message, type, param, code}}`` with the real status codes."""

from __future__ import annotations

# The body the API answers for each status, used when a test injects one without its own.
ERROR_BODIES: dict[int, tuple[str, str, str | None]] = {
    400: ("The request was invalid (injected by the fake).", "invalid_request_error", None),
    404: ("Not found (injected by the fake).", "invalid_request_error", None),
    408: ("Request timed out.", "timeout", None),
    409: ("The request conflicted with another one (injected by the fake).", "invalid_request_error", None),
    429: ("Rate limit reached for requests in organization org-synthaug-test on requests per min (RPM): "
          "Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit "
          "https://platform.openai.com/account/rate-limits to learn more.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


class ApiError(Exception):
    """Answered as ``status`` with ``{"error": error}`` and ``headers``."""

    def __init__(self, status: int, error: dict, headers: dict[str, str] | None = None):
        super().__init__(error.get("message"))
        self.status, self.error, self.headers = status, error, headers or {}


def api_error(status: int, message: str, param: str | None = None, code: str | None = None,
              kind: str = "invalid_request_error") -> ApiError:
    return ApiError(status, {"message": message, "type": kind, "param": param, "code": code})


def injected_error(status: int) -> dict:
    """The error object the API answers with ``status``."""
    message, kind, code = ERROR_BODIES.get(status, (f"Injected error {status}.", "server_error", None))
    return {"message": message, "type": kind, "param": None, "code": code}


def masked_key(key: str) -> str:
    """How the API echoes a wrong key: its first three and last four characters only."""
    return key[:3] + "*" * max(len(key) - 7, 4) + key[-4:] if len(key) > 8 else "*" * len(key)
