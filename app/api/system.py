"""Liveness, readiness and Prometheus metrics; none needs an API key."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics
from app.deps import DatabaseDep, SettingsDep
from app.errors import ServiceUnavailable
from app.services import readiness

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz():
    """The process is up (it touches nothing else: a database outage does not make it fail)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DatabaseDep, settings: SettingsDep):
    """The database answers and, in distributed mode, the broker does; 503 names what does not."""
    result = readiness.check(db, settings)
    if not result.ready:
        raise ServiceUnavailable("; ".join(result.problems), extra={"checks": result.checks})
    return {"status": "ready", "checks": result.checks}


@router.get("/metrics", response_class=Response)
def prometheus_metrics(db: DatabaseDep, settings: SettingsDep):
    """Prometheus exposition: request counters and latency, jobs, samples, training speed, queue depths."""
    return Response(metrics.exposition(db, settings), media_type=CONTENT_TYPE_LATEST)
