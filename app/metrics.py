"""Prometheus metrics of the API process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import JOB_STATUSES, FinetuneJob, Generation

HTTP_REQUESTS = Counter("synthaug_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("synthaug_http_request_seconds", "HTTP request latency", ["method", "route"])
JOBS = Gauge("synthaug_jobs", "Jobs by kind and status", ["kind", "status"])


def refresh_job_gauges(session: Session) -> None:
    """Set the job gauges from the database, the source of truth."""
    for kind, model in (("finetune", FinetuneJob), ("generation", Generation)):
        counts = dict(session.execute(select(model.status, func.count()).group_by(model.status)).all())
        for status in JOB_STATUSES:
            JOBS.labels(kind, status).set(counts.get(status, 0))
