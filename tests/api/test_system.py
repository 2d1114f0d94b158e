"""GET /healthz, GET /readyz, GET /metrics, and a database outage as a 503 on any route."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient
from kombu.transport.redis import Channel
from pydantic import SecretStr
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.db.models import CorpusReport, Sample, Tenant
from app.db.session import Database
from app.deps import SessionDep
from app.main import create_app
from app.settings import Settings
from tests.api.factories import insert_corpus, insert_generation, queued_job, update_job

# A database of the shared Redis that no worker reads: messages sent here are never consumed, and
# the queue-depth test empties it.
REDIS_URL = os.environ.get("SYNTHAUG_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
UNREACHABLE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_db() -> Iterator[Database]:
    database = Database(UNREACHABLE_POSTGRES)
    yield database
    database.dispose()


def client_with(settings: Settings, db: Database, **overrides) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides), db=db))


def sample(body: str, name: str, **labels: str) -> float | None:
    """The value of series ``name{labels}`` in a Prometheus text body, None when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


class TestHealthz:
    def test_ok_without_a_key(self, client):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def test_ok_while_the_database_is_down(self, settings, unreachable_db):
        with client_with(settings, unreachable_db) as client:
            assert client.get("/healthz").status_code == 200


class TestReadyz:
    def test_ready_when_the_database_answers(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "not configured"}}

    def test_503_naming_the_database_when_it_does_not(self, settings, unreachable_db):
        with client_with(settings, unreachable_db) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "ServiceUnavailable"
        assert body["detail"] == "database not reachable: OperationalError"
        assert body["checks"] == {"database": "failed: OperationalError", "broker": "not configured"}

    def test_ready_with_a_broker_that_answers(self, settings, db):
        with client_with(settings, db, broker_url=REDIS_URL) as client:
            response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}

    def test_503_naming_the_broker_without_its_password(self, settings, db):
        url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
        with client_with(settings, db, broker_url=url, broker_timeout_s=1.0) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        masked = url.replace("hunter2", "***")
        assert body["detail"] == f"broker not reachable at {masked}: ConnectionError"
        assert body["checks"] == {"database": "ok", "broker": "failed: ConnectionError"}
        assert "hunter2" not in response.text

    def test_both_failures_are_named(self, settings, unreachable_db):
        url = f"redis://127.0.0.1:{closed_port()}/0"
        with client_with(settings, unreachable_db, broker_url=url, broker_timeout_s=1.0) as client:
            response = client.get("/readyz")
        assert response.status_code == 503
        detail = response.json()["detail"]
        assert detail.startswith("database not reachable: OperationalError; broker not reachable at ")


class TestDatabaseOutage:
    def test_an_authenticated_request_is_a_503_to_retry(self, settings, unreachable_db):
        with client_with(settings, unreachable_db) as client:
            response = client.get("/datasets", headers={"Authorization": "Bearer sk-whatever"})
        assert response.status_code == 503
        assert response.json() == {
            "error": "ServiceUnavailable",
            "detail": "the database is unavailable: OperationalError; retry shortly",
        }
        assert int(response.headers["Retry-After"]) > 0

    def test_an_exhausted_pool_is_a_503(self, settings, migrated_url):
        # One pooled connection, held by the test: a request cannot get one within the pool timeout.
        database = Database.of(Settings(database_url=migrated_url, db_pool_size=1, db_max_overflow=0,
                                        sqlite_pool_size=1, db_pool_timeout_s=0.5))
        held = database.engine.connect()
        try:
            with client_with(settings, database) as client:
                started = time.monotonic()
                response = client.get("/datasets", headers={"Authorization": "Bearer sk-whatever"})
                elapsed = time.monotonic() - started
        finally:
            held.close()
            database.dispose()
        assert response.status_code == 503
        assert elapsed < 2.0
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["detail"] == (
            "the database is unavailable: no free connection in the pool; retry shortly"
        )

    def test_an_integrity_error_stays_a_server_error(self, settings, db):
        app = create_app(settings, db=db)

        @app.post("/test-duplicate-tenant")
        def duplicate_tenant(session: SessionDep):
            name = f"dup-{uuid.uuid4().hex}"
            session.add_all([Tenant(name=name), Tenant(name=name)])
            session.flush()

        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post("/test-duplicate-tenant")
        assert response.status_code == 500
        assert "Retry-After" not in response.headers


class TestMetricsAccess:
    """/metrics counts every tenant's jobs: it answers only with its own token, or when made public."""

    def test_refused_by_default_with_how_to_open_it(self, client, auth):
        response = client.get("/metrics", headers=auth)  # a tenant's API key is not enough
        assert response.status_code == 401
        assert "SYNTHAUG_METRICS_TOKEN" in response.json()["detail"] and "synthaug_" not in response.text

    def test_the_token_opens_it(self, settings, db):
        with client_with(settings, db, metrics_token=SecretStr("scrape-secret")) as client:
            assert client.get("/metrics").status_code == 401
            assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
            response = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert response.status_code == 200 and "# TYPE synthaug_jobs gauge" in response.text

    def test_public_needs_no_token(self, settings, db):
        with client_with(settings, db, metrics_public=True) as client:
            assert client.get("/metrics").status_code == 200


class TestMetrics:
    @pytest.fixture
    def settings(self, settings):
        return settings.model_copy(update={"metrics_public": True})

    def test_prometheus_exposition(self, client, auth):
        client.get("/healthz")
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        body = response.text
        assert "# TYPE synthaug_http_requests_total counter" in body
        assert 'synthaug_http_requests_total{method="GET",route="/healthz",status="200"}' in body
        assert "# TYPE synthaug_http_request_seconds histogram" in body
        assert "# TYPE synthaug_jobs gauge" in body
        assert sample(body, "synthaug_source_up", source="database") == 1.0
        names = [family.name for family in text_string_to_metric_families(body)]
        assert len(names) == len(set(names))

    def test_requests_are_counted_by_route_and_status_even_when_the_app_fails(self):
        import asyncio

        from app.metrics import HTTP_REQUESTS, RequestMetrics

        async def app(scope, receive, send):
            scope["route"] = type("Route", (), {"path": "/things/{id}"})()
            if scope["path"] == "/things/1":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            else:
                raise RuntimeError("boom")

        async def nothing():
            return {"type": "http.request", "body": b""}

        async def ignore(_message):
            pass

        def count(status: str) -> float:
            return HTTP_REQUESTS.labels("GET", "/things/{id}", status)._value.get()

        before = count("404"), count("500")
        asyncio.run(RequestMetrics(app)({"type": "http", "method": "GET", "path": "/things/1"}, nothing, ignore))
        with pytest.raises(RuntimeError):
            asyncio.run(RequestMetrics(app)({"type": "http", "method": "GET", "path": "/things/2"}, nothing, ignore))
        assert (count("404"), count("500")) == (before[0] + 1, before[1] + 1)

    def test_job_gauges_follow_the_database(self, client, auth):
        job = queued_job(client, auth)
        body = client.get("/metrics").text
        assert sample(body, "synthaug_jobs", kind="finetune", status="queued") == 1.0
        client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth)
        body = client.get("/metrics").text
        assert sample(body, "synthaug_jobs", kind="finetune", status="queued") == 0.0
        assert sample(body, "synthaug_jobs", kind="finetune", status="cancelled") == 1.0
        assert sample(body, "synthaug_jobs", kind="generation", status="queued") == 0.0

    def test_reports_are_jobs_too(self, client, db, tenant_id):
        corpus_id = insert_corpus(db, tenant_id)
        with db.transaction() as session:
            session.add(CorpusReport(tenant_id=tenant_id, corpus_id=corpus_id, status="running"))
        body = client.get("/metrics").text
        assert sample(body, "synthaug_jobs", kind="report", status="running") == 1.0
        assert sample(body, "synthaug_jobs", kind="report", status="queued") == 0.0

    def test_samples_by_status_match_the_sample_rows(self, client, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        insert_generation(db, tenant_id, adapter_id, corpus_id, "control", ["a b c", "d e f", "g h i"],
                          rejected=[("j k l", "degenerate")])
        insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", ["m n o"],
                          rejected=[("p q r", "memorized"), ("s t u", "label_mismatch")])
        with db.transaction() as session:
            rows = dict(session.execute(select(Sample.status, func.count()).group_by(Sample.status)).all())
        assert rows == {"accepted": 4, "rejected": 3}
        body = client.get("/metrics").text
        assert sample(body, "synthaug_samples", status="accepted") == 4.0
        assert sample(body, "synthaug_samples", status="rejected") == 3.0

    def test_tokens_per_second_of_running_jobs_only(self, client, db, auth):
        job = queued_job(client, auth)
        assert sample(client.get("/metrics").text, "synthaug_training_tokens_per_second", job_id=job["id"]) is None
        update_job(db, job["id"], status="running", metrics={"loss": 1.5, "tokens_per_second": 812.5})
        body = client.get("/metrics").text
        assert sample(body, "synthaug_training_tokens_per_second", job_id=job["id"]) == 812.5
        update_job(db, job["id"], status="succeeded")
        body = client.get("/metrics").text
        assert sample(body, "synthaug_training_tokens_per_second", job_id=job["id"]) is None

    def test_no_queue_depth_without_a_broker(self, client):
        body = client.get("/metrics").text
        assert "synthaug_queue_depth" not in body
        assert sample(body, "synthaug_source_up", source="broker") is None

    def test_queue_depth_counts_every_priority_list_kombu_writes(self, settings, db):
        keys = redis.Redis.from_url(REDIS_URL)
        keys.flushdb()
        sender = Celery("metrics-test", broker=REDIS_URL)
        try:
            for priority in (0, 5, 9):
                sender.send_task("finetune.run", args=["ftjob_x"], queue="train", priority=priority)
            sender.send_task("generation.run", args=["gen_x"], queue="generate")
            assert any(Channel.sep.encode() in key for key in keys.keys("train*")), "kombu wrote no priority list"
            with client_with(settings, db, broker_url=REDIS_URL) as client:
                body = client.get("/metrics").text
        finally:
            sender.close()
            keys.flushdb()
            keys.close()
        assert sample(body, "synthaug_queue_depth", queue="train") == 3.0
        assert sample(body, "synthaug_queue_depth", queue="generate") == 1.0
        assert sample(body, "synthaug_queue_depth", queue="default") == 0.0
        assert sample(body, "synthaug_source_up", source="broker") == 1.0

    def test_a_broker_error_leaves_the_rest(self, settings, db):
        url = f"redis://127.0.0.1:{closed_port()}/0"
        with client_with(settings, db, broker_url=url, broker_timeout_s=1.0) as client:
            response = client.get("/metrics")
        assert response.status_code == 200
        assert "synthaug_queue_depth" not in response.text
        assert sample(response.text, "synthaug_source_up", source="broker") == 0.0
        assert sample(response.text, "synthaug_jobs", kind="finetune", status="queued") is not None

    def test_a_database_outage_leaves_the_process_metrics(self, settings, unreachable_db):
        with client_with(settings, unreachable_db) as client:
            client.get("/healthz")
            response = client.get("/metrics")
        assert response.status_code == 200
        assert 'synthaug_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text
        assert sample(response.text, "synthaug_source_up", source="database") == 0.0
        assert "synthaug_jobs{" not in response.text


class TestLoadShedding:
    """Past SYNTHAUG_MAX_PENDING_REQUESTS unanswered requests, one more is a 503 at once."""

    @staticmethod
    def run(limit: int, paths: list[str]) -> tuple:
        import asyncio

        from app.admission import LoadShedding

        started: list[str] = []
        gate = asyncio.Event()

        async def app(scope, receive, send):
            started.append(scope["path"])
            if scope["path"] != "/stream":
                await gate.wait()  # a slow route: it answers once the gate opens
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await gate.wait()  # a stream: its body takes as long again
            await send({"type": "http.response.body", "body": b"ok"})

        async def one(shedding, path: str, headers=()):
            messages = []

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                messages.append(message)

            scope = {"type": "http", "method": "GET", "path": path, "headers": list(headers), "query_string": b""}
            await shedding(scope, receive, send)
            start = next(m for m in messages if m["type"] == "http.response.start")
            body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
            return start["status"], dict(start["headers"]), body

        async def main():
            shedding = LoadShedding(app, limit)
            tasks = [asyncio.create_task(one(shedding, path)) for path in paths]
            await asyncio.sleep(0.05)
            pending_then = shedding.pending
            gate.set()
            results = await asyncio.gather(*tasks)
            after = await one(shedding, "/later")  # room again once the others answered
            return results + [after], pending_then, shedding.pending

        results, pending_then, pending_end = asyncio.run(main())
        return results, started, pending_then, pending_end

    def test_the_request_past_the_limit_is_refused_at_once_and_room_comes_back(self):
        results, started, pending_then, pending_end = self.run(2, ["/a", "/b", "/c", "/healthz"])
        statuses = [status for status, _, _ in results]
        assert statuses == [200, 200, 503, 200, 200]
        _, headers, body = results[2]
        assert headers[b"retry-after"] == b"1"
        assert b"SYNTHAUG_MAX_PENDING_REQUESTS" in body and b"Overloaded" in body
        assert "/c" not in started  # the refused request never reached the app
        assert pending_then == 2 and pending_end == 0  # /healthz is never counted nor refused

    def test_a_stream_holds_no_slot_once_it_started(self):
        results, _, pending_then, _ = self.run(1, ["/stream", "/a"])
        assert [status for status, _, _ in results] == [200, 200, 200]
        assert pending_then == 1  # /a; the stream left its slot at its first byte

    def test_zero_turns_it_off(self):
        results, _, _, _ = self.run(0, ["/a", "/b", "/c"])
        assert [status for status, _, _ in results] == [200, 200, 200, 200]
