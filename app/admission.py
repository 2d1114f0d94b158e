"""What a request must pass before a route sees it.

A request with a body is authenticated before a byte of it is read, and its body is capped twice: by
its Content-Length up front, and by counting the bytes as they stream in (a chunked body declares no
length). Path and query parameters, JSON strings and form fields holding a NUL byte are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db.outages import RETRY_AFTER_S, outage_reason, unavailable_body
from app.db.session import Database
from app.errors import Unauthorized
from app.services import auth
from app.settings import Settings

# Paths that answer without a key (a body sent to them is still capped).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
UPLOAD_ROUTE = ("POST", "/datasets")
# The upload limit is the file's: the multipart envelope and the form fields get this much more.
FORM_ALLOWANCE_BYTES = 64 * 1024
# Where the admitted request's tenant waits for get_tenant, in the request's state.
ADMITTED_TENANT = "admitted_tenant_id"
NUL = "\x00"
# A refused request's body is never read: the connection closes after the answer rather than the
# server draining (and the client sending) the rest to keep it alive.
CLOSE = {"Connection": "close"}
# An overloaded server's answer: retry after this many seconds.
OVERLOAD_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class BodyCap:
    """The most bytes a route's body may have, and how a refusal names it."""

    limit: int
    error: str
    source: str

    def refusal(self, size: int, *, declared: bool) -> JSONResponse:
        """413 naming the size (declared, or received so far), the excess and the limit."""
        size_text = f"{size:,} bytes" if declared else f"at least {size:,} bytes (not read further)"
        detail = (f"the request body is {size_text}, {size - self.limit:,} bytes over the limit of "
                  f"{self.limit:,} bytes ({self.source}); nothing was stored")
        return JSONResponse({"error": self.error, "detail": detail}, status_code=413, headers=CLOSE)


class BodyTooLarge(Exception):
    """Raised into the app when the streamed body passes its cap; the app's answer is replaced by a 413."""


class RequestAdmission:
    """Pure ASGI middleware: the key, then the body's size, before any route reads the body."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.upload_cap = BodyCap(
            settings.max_upload_bytes + FORM_ALLOWANCE_BYTES, "UploadTooLarge",
            f"SYNTHAUG_MAX_UPLOAD_BYTES {settings.max_upload_bytes:,} for the file plus "
            f"{FORM_ALLOWANCE_BYTES:,} for the form",
        )
        self.json_cap = BodyCap(settings.max_json_bytes, "RequestTooLarge", "SYNTHAUG_MAX_JSON_BYTES")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _declared_length(headers)
        if not (declared or "transfer-encoding" in headers):
            await self.app(scope, receive, send)
            return
        if scope["path"] not in OPEN_PATHS:
            refusal = await self._authenticate(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        route = (scope["method"], scope["path"].rstrip("/"))
        cap = self.upload_cap if route == UPLOAD_ROUTE else self.json_cap
        if declared is not None and declared > cap.limit:
            await cap.refusal(declared, declared=True)(scope, receive, send)
            return
        await self._counted(scope, receive, send, cap)

    async def _authenticate(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        """None once the key is good (its tenant kept for get_tenant), else the 401 (or 503) to send."""
        raw = auth.presented_key(headers.get("authorization"), headers.get("x-api-key"))
        try:
            tenant_id = await tenant_of(scope["app"].state, raw)
        except Unauthorized as exc:
            return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=CLOSE)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            reason = outage_reason(exc)
            if reason is None:
                raise
            return JSONResponse(unavailable_body(reason), status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S), **CLOSE})
        scope.setdefault("state", {})[ADMITTED_TENANT] = tenant_id
        return None

    async def _counted(self, scope: Scope, receive: Receive, send: Send, cap: BodyCap) -> None:
        """Run the app on a receive that stops at the cap; whatever it answers then becomes the 413."""
        received = 0
        over = started = False

        async def capped_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap.limit:
                    over = True
                    raise BodyTooLarge(f"over {cap.limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over:
                # The layers between (the body parser, the exception handlers) may have turned the cut
                # body into a 400; the client is owed the 413, and the app's answer is dropped.
                if not started:
                    started = True
                    await cap.refusal(received, declared=False)(scope, receive, send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not over:
                raise
            if not started:
                started = True
                await cap.refusal(received, declared=False)(scope, receive, send)


class LoadShedding:
    """Pure ASGI middleware: at most ``limit`` requests of this process between their arrival and the
    start of their response; one more is a 503 with Retry-After at once (0 turns this off).

    Under a flood, requests otherwise queue for threads and database connections until their clients
    time out, and the server spends its time on answers nobody reads: 200 submissions a second
    offered against a capacity of about 110 got 511 of 6,000 stored in ten minutes (bench/api.py).
    A stream counts until its first byte (an event stream or an export holds no slot while it runs);
    the open paths (health, readiness, metrics, docs) are never refused.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.pending = 0  # one event loop per process: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limit or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.pending >= self.limit:
            headers = Headers(scope=scope)
            with_body = "transfer-encoding" in headers or (_declared_length(headers) or 0) > 0
            detail = (f"this server is answering {self.limit} requests already (SYNTHAUG_MAX_PENDING_REQUESTS); "
                      f"nothing was done, retry in {OVERLOAD_RETRY_AFTER_S} s")
            refusal = JSONResponse({"error": "Overloaded", "detail": detail}, status_code=503,
                                   headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_S), **(CLOSE if with_body else {})})
            await refusal(scope, receive, send)
            return
        self.pending += 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.pending -= 1

        async def send_releasing(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            release()


async def tenant_of(state: Any, raw_key: str | None) -> str:
    """The tenant owning ``raw_key`` (401 otherwise): from the app's key cache, else in its own short
    read on a thread (no connection is held between this hop and the route's, so requests waiting
    for a thread hold none)."""
    settings: Settings = state.settings
    key_hash = auth.presented_hash(raw_key, settings.key_pepper.get_secret_value())
    cache: auth.KeyCache = state.key_cache
    tenant_id = cache.get(key_hash)
    if tenant_id is None:
        tenant_id = await run_in_threadpool(_stored_tenant, state.db, key_hash)
        cache.put(key_hash, tenant_id)
    return tenant_id


def _stored_tenant(db: Database, key_hash: str) -> str:
    with db.transaction(write=False) as session:
        return auth.tenant_of_hash(session, key_hash)


def _declared_length(headers: Headers) -> int | None:
    """The Content-Length, or None when absent (the server refuses a malformed one before the app)."""
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def refuse_nul_bytes(request: Request) -> None:
    """422 naming the first path or query parameter, JSON string or form field that holds a NUL byte:
    Postgres text cannot store one, and an id or filter holding one names nothing."""
    found = _first_nul("path", request.path_params.items()) or _first_nul("query", request.query_params.multi_items())
    # Only a body the route reads: FastAPI has parsed it by now, and the request keeps the parse.
    if found is None and getattr(request.scope.get("route"), "body_field", None) is not None:
        found = await _nul_in_body(request)
    if found is not None:
        raise RequestValidationError([{
            "type": "nul_byte", "loc": found,
            "msg": "holds a NUL byte (\\x00), which no id, filter or stored text may contain",
        }])


def _first_nul(where: str, items: Any) -> tuple | None:
    for name, value in items:
        if NUL in name or (isinstance(value, str) and NUL in value):
            return (where, name)
    return None


async def _nul_in_body(request: Request) -> tuple | None:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        for name, value in form.multi_items():
            text = (value.filename or "") if isinstance(value, UploadFile) else value
            if NUL in name or NUL in text:
                return ("body", name)
        return None
    try:
        data = await request.json()
    except ValueError:  # not JSON: the route's own validation says so
        return None
    return _nul_in_json(data)


def _nul_in_json(data: Any) -> tuple | None:
    """The location of the first string (or key) holding a NUL, walked without recursion: a deeply
    nested body must not overflow the stack."""
    stack: list[tuple[tuple, Any]] = [(("body",), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return loc
        elif isinstance(value, dict):
            for key in value:
                if NUL in key:
                    return (*loc, key)
            stack.extend(((*loc, key), child) for key, child in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((*loc, i), child) for i, child in reversed(list(enumerate(value))))
    return None
