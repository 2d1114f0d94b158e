from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.deps import DatabaseDep, SessionDep
from app.errors import ServiceUnavailable
from app.metrics import refresh_job_gauges

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz():
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DatabaseDep):
    """The database answers."""
    try:
        with db.transaction() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable(f"database not reachable: {type(exc).__name__}") from exc
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(session: SessionDep):
    """Prometheus exposition: request counters and job/generation counts by status."""
    refresh_job_gauges(session)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
