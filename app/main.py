"""The FastAPI application factory."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from app.admission import LoadShedding, RequestAdmission, refuse_nul_bytes
from app.api import adapters, corpora, datasets, finetune_jobs, generations, prompt_sets, system
from app.db.outages import RETRY_AFTER_S, outage_reason, unavailable_body
from app.db.session import Database, JobQueue
from app.errors import SynthaugError
from app.metrics import RequestMetrics
from app.services.auth import KeyCache
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)



def create_app(settings: Settings | None = None, queue: JobQueue | None = None, db: Database | None = None) -> FastAPI:
    """An app bound to one database and one job queue (embedded runner or Celery)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.db = db or Database.of(settings, queue)
        app.state.key_cache = KeyCache(settings.key_cache_seconds)
        yield
        if db is None:
            app.state.db.dispose()

    app = FastAPI(
        title="synthaug",
        version="0.1.0",
        description="Label-conditioned synthetic transcript corpora for cognitive-impairment classifiers.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_bytes)],
    )
    for module in (datasets, prompt_sets, finetune_jobs, adapters, generations, corpora, system):
        app.include_router(module.router)

    @app.exception_handler(SynthaugError)
    async def _synthaug_error(_request: Request, exc: SynthaugError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        # Only the JSON-safe fields: a validator's ctx holds the exception object itself.
        errors = [{"type": err["type"], "loc": list(err["loc"]), "msg": err["msg"]} for err in exc.errors()]
        return JSONResponse({"error": "InvalidInput", "detail": problems, "errors": errors}, status_code=422)

    # The framework's own refusals (a body that does not parse, an unknown path or method) in the shape
    # of ours; the parser's reason (e.g. bytes that are not UTF-8) is kept, "error parsing the body" alone
    # does not say what to fix.
    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        detail = f"{exc.detail}: {exc.__cause__}" if exc.__cause__ is not None else exc.detail
        error = HTTPStatus(exc.status_code).phrase.replace(" ", "")
        return JSONResponse({"error": error, "detail": detail}, status_code=exc.status_code, headers=exc.headers)

    # Driver and pool errors reach this handler wherever they are raised (a route, a dependency,
    # the request's commit); connection-level ones are a 503 to retry, any other stays a 500.
    async def _database_error(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        reason = outage_reason(exc)
        if reason is None:
            raise exc
        logger.warning("database unavailable during %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(unavailable_body(reason), status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.TimeoutError, _database_error)

    # Added before the counting middleware, so it runs inside it: its 401s and 413s are counted too.
    app.add_middleware(RequestAdmission, settings=settings)

    # Outside the admission (a shed request costs no key check), inside the counting (sheds are counted).
    app.add_middleware(LoadShedding, limit=settings.max_pending_requests)
    app.add_middleware(RequestMetrics)

    return app
