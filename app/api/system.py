"""Liveness, readiness and Prometheus metrics; none needs an API key (metrics may need their own token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics
from app.deps import DatabaseDep, SettingsDep
from app.errors import ServiceUnavailable
from app.schemas.common import binary_response, error_responses
from app.services import readiness

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz():
    """The process is up (it touches nothing else: a database outage does not make it fail)."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
def readyz(db: DatabaseDep, settings: SettingsDep):
    """The database answers and, in distributed mode, the broker does; 503 names what does not."""
    result = readiness.check(db, settings)
    if not result.ready:
        raise ServiceUnavailable("; ".join(result.problems), extra={"checks": result.checks})
    return {"status": "ready", "checks": result.checks}


@router.get(
    "/metrics", response_class=Response,
    responses=binary_response("Prometheus text exposition.", CONTENT_TYPE_LATEST.split(";")[0]) | error_responses(401),
)
def prometheus_metrics(db: DatabaseDep, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None):
    """Prometheus exposition: request counters and latency, jobs, samples, training speed, queue depths.
    Needs `Authorization: Bearer <SYNTHAUG_METRICS_TOKEN>` unless SYNTHAUG_METRICS_PUBLIC is set."""
    metrics.authorize_scrape(settings, authorization)
    return Response(metrics.exposition(db, settings), media_type=CONTENT_TYPE_LATEST)
