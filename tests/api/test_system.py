"""GET /healthz, GET /readyz, GET /metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.db.session import Database
from app.main import create_app
from tests.api.factories import queued_job


class TestHealthz:
    def test_ok_without_a_key(self, client):
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


class TestReadyz:
    def test_ready_when_the_database_answers(self, client):
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}

    def test_503_when_it_does_not(self, settings):
        unreachable = Database("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2")
        try:
            with TestClient(create_app(settings, db=unreachable)) as client:
                response = client.get("/readyz")
        finally:
            unreachable.dispose()
        assert response.status_code == 503
        assert response.json()["error"] == "ServiceUnavailable"
        assert "database not reachable" in response.json()["detail"]


class TestMetrics:
    def test_prometheus_exposition(self, client, auth):
        client.get("/healthz")
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        body = response.text
        assert "# TYPE synthaug_http_requests_total counter" in body
        assert 'synthaug_http_requests_total{method="GET",route="/healthz",status="200"}' in body
        assert "# TYPE synthaug_jobs gauge" in body

    def test_job_gauges_follow_the_database(self, client, auth):
        job = queued_job(client, auth)
        body = client.get("/metrics").text
        assert 'synthaug_jobs{kind="finetune",status="queued"} 1.0' in body
        client.post(f"/finetune-jobs/{job['id']}/cancel", headers=auth)
        body = client.get("/metrics").text
        assert 'synthaug_jobs{kind="finetune",status="queued"} 0.0' in body
        assert 'synthaug_jobs{kind="finetune",status="cancelled"} 1.0' in body
        assert 'synthaug_jobs{kind="generation",status="queued"} 0.0' in body
