"""Prometheus metrics: this process's request counters, and the service's state read at scrape time.

Jobs run in other processes (Celery workers), so their numbers are read from the database (the
source of truth) and the broker on each scrape, never kept in this process's gauges: a series that
no longer exists (a finished job's tokens/s) simply is not in the next scrape.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import broker
from app.db import counts
from app.db.models import JOB_STATUSES, SAMPLE_STATUSES
from app.db.session import Database
from app.errors import Unauthorized
from app.services.queues import QUEUES
from app.settings import Settings

logger = logging.getLogger(__name__)

HTTP_REQUESTS = Counter("synthaug_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram("synthaug_http_request_seconds", "HTTP request latency", ["method", "route"])
EVENT_STREAMS_OPEN = Gauge("synthaug_event_streams_open", "Server-sent event streams open in this process")


def authorize_scrape(settings: Settings, authorization: str | None) -> None:
    """Refuse a scrape without the metrics token (401) unless metrics are public: they count every tenant's jobs."""
    if settings.metrics_public:
        return
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    if token is None:
        raise Unauthorized("/metrics is not public: set SYNTHAUG_METRICS_TOKEN and scrape with "
                           "'Authorization: Bearer <token>', or set SYNTHAUG_METRICS_PUBLIC=true")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <SYNTHAUG_METRICS_TOKEN>'")


@dataclass
class ServiceState:
    """What one scrape read; a source that failed leaves its fields None (their series are left out)."""

    jobs: dict[tuple[str, str], int] | None = None
    samples: dict[str, int] | None = None
    tokens_per_second: dict[str, float] | None = None
    queue_depths: dict[str, int] | None = None
    sources_up: dict[str, bool] = field(default_factory=dict)


def read_state(db: Database, settings: Settings) -> ServiceState:
    """Read the database and, when one is configured, the broker; a failing source is logged, not raised."""
    state = ServiceState()
    try:
        with db.transaction(write=False) as session:
            state.jobs = counts.jobs_by_status(session)
            state.samples = counts.samples_by_status(session)
            state.tokens_per_second = counts.running_tokens_per_second(session)
        state.sources_up["database"] = True
    except Exception as error:
        state.jobs = state.samples = state.tokens_per_second = None
        state.sources_up["database"] = False
        logger.warning("metrics: database not readable: %s", error)
    if settings.broker_url:
        try:
            state.queue_depths = broker.queue_depths(settings.broker_url, settings.broker_timeout_s, QUEUES)
            state.sources_up["broker"] = True
        except Exception as error:
            state.sources_up["broker"] = False
            logger.warning("metrics: broker not readable at %s: %s", broker.masked_url(settings.broker_url), error)
    return state


class ServiceStateCollector(Collector):
    """Exposes one ServiceState as gauge families."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        up = GaugeMetricFamily(
            "synthaug_source_up", "1 when this scrape could read the source (database, broker)", labels=["source"]
        )
        for source, ok in state.sources_up.items():
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        if state.jobs is not None:
            jobs = GaugeMetricFamily("synthaug_jobs", "Jobs by kind and status", labels=["kind", "status"])
            for kind in counts.JOB_KINDS:
                statuses = dict.fromkeys(JOB_STATUSES, 0) | {s: n for (k, s), n in state.jobs.items() if k == kind}
                for status, count in statuses.items():
                    jobs.add_metric([kind, status], count)
            yield jobs
        if state.samples is not None:
            samples = GaugeMetricFamily("synthaug_samples", "Samples generated, by status", labels=["status"])
            for status in SAMPLE_STATUSES:
                samples.add_metric([status], state.samples.get(status, 0))
            yield samples
        if state.tokens_per_second is not None:
            speed = GaugeMetricFamily(
                "synthaug_training_tokens_per_second",
                "Training throughput of each running fine-tune job, as its worker last reported it",
                labels=["job_id"],
            )
            for job_id, value in sorted(state.tokens_per_second.items()):
                speed.add_metric([job_id], value)
            yield speed
        if state.queue_depths is not None:
            depth = GaugeMetricFamily(
                "synthaug_queue_depth", "Task messages waiting in each broker queue", labels=["queue"]
            )
            for queue, value in state.queue_depths.items():
                depth.add_metric([queue], value)
            yield depth


def exposition(db: Database, settings: Settings) -> bytes:
    """The Prometheus text of this process's metrics followed by the service's state."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(ServiceStateCollector(read_state(db, settings)))
    return generate_latest(REGISTRY) + generate_latest(scrape)


class RequestMetrics:
    """Pure ASGI middleware counting requests by method, route and status, and timing them to the start
    of the response (a stream's length is the client's, not the server's).

    Not Starlette's BaseHTTPMiddleware: that runs the app in a task of its own and relays every body
    chunk through a memory stream, which cost a fifth of a small request's time here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def record(status: int) -> None:
            # The router writes the matched route into this same scope.
            path = getattr(scope.get("route"), "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - started)

        async def send_counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            if not answered:  # an exception the server turns into a 500
                record(500)
