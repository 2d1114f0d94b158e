"""app.admission (a key before the body is read, the body capped, NUL bytes refused) and the other bad
inputs that used to be 500s: overflowing cursors and base_model names no file system can look up.

The key and size cases run against a real uvicorn server on loopback: a test client hands the app the
whole body at once, so only a socket shows whether the server answered before reading it.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, update

from app.admission import FORM_ALLOWANCE_BYTES
from app.db.base import utcnow
from app.db.models import ApiKey, Dataset, FinetuneJob, Record
from app.db.session import Database
from app.main import create_app
from app.services.auth import KeyCache
from app.settings import Settings
from tests.api.factories import balanced_rows, csv_bytes, jsonl_bytes, queued_job, upload, upload_small_dataset
from tests.conftest import TEST_PEPPER
from tests.unit.test_ingestion_archives import FIXTURES

MAX_UPLOAD = 200_000
MAX_JSON = 20_000
MAX_LISTED = 5
UPLOAD_CAP = MAX_UPLOAD + FORM_ALLOWANCE_BYTES
# Far more than loopback buffers hold: a client that got to send all of it was read to the end.
HUGE = 64 * 1024 * 1024
FILE_PART = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
             b"Content-Type: text/csv\r\n\r\n")
MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, max_upload_bytes=MAX_UPLOAD,
                    max_json_bytes=MAX_JSON, max_report_issues=MAX_LISTED)


@pytest.fixture
def server(settings, db) -> Iterator[str]:
    """The app behind a real uvicorn server on a free loopback port, in a background thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    instance = uvicorn.Server(uvicorn.Config(create_app(settings, db=db), log_level="warning", access_log=False))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    instance.should_exit = True
    thread.join(timeout=30)
    sock.close()


class Body:
    """A request body streamed in chunks, counting the bytes the server let the client send."""

    def __init__(self, size: int, head: bytes = b"") -> None:
        self.size, self.head, self.sent = size, head, 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in itertools.chain([self.head], itertools.repeat(b"x" * 65536)):
            piece = piece[: self.size - self.sent]
            if not piece:
                return
            self.sent += len(piece)
            yield piece


def send(url: str, path: str, body: Body, headers: dict[str, str], *, declared: bool) -> httpx.Response:
    """POST ``body`` with its Content-Length, or chunked without one."""
    length = {"Content-Length": str(body.size)} if declared else {}
    return httpx.post(url + path, content=body, headers={**headers, **length}, timeout=30)


def stored(db) -> tuple[int, int, int]:
    """Datasets, records and fine-tune jobs in the database, whoever owns them."""
    with db.transaction() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Dataset, Record, FinetuneJob))


class TestKeyBeforeBody:
    @pytest.mark.parametrize("key", [{}, {"X-API-Key": "sk_syn_not-a-key"}], ids=["no_key", "wrong_key"])
    @pytest.mark.parametrize("declared", [True, False], ids=["content_length", "chunked"])
    def test_401_before_the_body_is_read(self, server, db, key, declared):
        body = Body(HUGE, FILE_PART)
        response = send(server, "/datasets", body, {**key, **MULTIPART}, declared=declared)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "Unauthorized"
        assert response.json()["detail"].startswith("missing API key" if not key else "invalid or revoked")
        assert body.sent < HUGE // 4, f"the client sent {body.sent:,} of {HUGE:,} bytes before the 401"
        assert stored(db) == (0, 0, 0)


class TestBodyCaps:
    def test_declared_length_over_the_upload_cap_is_413_before_reading(self, server, db, auth):
        body = Body(HUGE, FILE_PART)
        response = send(server, "/datasets", body, {**auth, **MULTIPART}, declared=True)
        assert response.status_code == 413, response.text
        assert response.json() == {"error": "UploadTooLarge", "detail": (
            f"the request body is {HUGE:,} bytes, {HUGE - UPLOAD_CAP:,} bytes over the limit of {UPLOAD_CAP:,} "
            f"bytes (SYNTHAUG_MAX_UPLOAD_BYTES {MAX_UPLOAD:,} for the file plus {FORM_ALLOWANCE_BYTES:,} for "
            "the form); nothing was stored")}
        assert body.sent < HUGE // 4
        assert stored(db) == (0, 0, 0)

    def test_chunked_upload_over_the_cap_is_413_once_the_cap_is_passed(self, server, db, auth):
        body = Body(HUGE, FILE_PART)
        response = send(server, "/datasets", body, {**auth, **MULTIPART}, declared=False)
        assert response.status_code == 413, response.text
        payload = response.json()
        assert payload["error"] == "UploadTooLarge"
        assert "the request body is at least " in payload["detail"]
        assert f"over the limit of {UPLOAD_CAP:,} bytes" in payload["detail"]
        assert UPLOAD_CAP < body.sent < HUGE // 4
        assert stored(db) == (0, 0, 0)

    @pytest.mark.parametrize("path", ["/finetune-jobs", "/generate", "/prompt-sets"])
    @pytest.mark.parametrize("declared", [True, False], ids=["content_length", "chunked"])
    def test_json_route_over_the_cap_is_413(self, server, db, auth, path, declared):
        body = Body(HUGE, b'{"dataset_id": "')
        response = send(server, path, body, {**auth, "Content-Type": "application/json"}, declared=declared)
        assert response.status_code == 413, response.text
        payload = response.json()
        assert payload["error"] == "RequestTooLarge"
        assert f"over the limit of {MAX_JSON:,} bytes (SYNTHAUG_MAX_JSON_BYTES)" in payload["detail"]
        assert body.sent < HUGE // 4
        assert stored(db) == (0, 0, 0)

    def test_an_upload_streamed_without_a_length_is_stored(self, server, auth):
        part = FILE_PART.replace(b"big.csv", b"small.csv")
        data = part + csv_bytes(balanced_rows(3, splits=["train"]), ("id", "text", "label", "split")) + b"\r\n--b--\r\n"
        response = httpx.post(server + "/datasets", content=iter([data[:100], data[100:]]),
                              headers={**auth, **MULTIPART}, timeout=30)
        assert response.status_code == 201, response.text
        assert response.json()["record_count"] == 6

    @pytest.mark.parametrize(("size", "status"), [(MAX_JSON, 422), (MAX_JSON + 1, 413)], ids=["at_cap", "one_over"])
    def test_a_json_body_at_the_cap_is_read_one_byte_more_is_not(self, client, auth, size, status):
        body = b'{"dataset_id": "ds_missing", "seed": -1}'.ljust(size)  # JSON allows trailing spaces
        response = client.post("/finetune-jobs", content=body, headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert ("seed" if status == 422 else "1 bytes over") in response.json()["detail"]


class TestDatabaseDown:
    def test_503_with_retry_after_before_the_body_is_read(self, settings):
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        down = Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none?connect_timeout=2")
        try:
            with TestClient(create_app(settings, db=down)) as client:
                response = client.post("/datasets", headers={"X-API-Key": "sk_syn_any"},
                                       files={"file": ("a.csv", csv_bytes(balanced_rows(3)))})
        finally:
            down.dispose()
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "ServiceUnavailable"
        assert int(response.headers["Retry-After"]) > 0


def nul_in_file_name() -> tuple[bytes, dict[str, str]]:
    """A multipart body whose file name holds a raw NUL (httpx would percent-encode it)."""
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="pilot\x00.csv"\r\n\r\n'
            + csv_bytes(balanced_rows(3)) + b"\r\n--b--\r\n")
    return body, MULTIPART


NUL_REQUESTS = [
    ("path_id", "get", "/datasets/ds_%00x", {}, ["path", "dataset_id"]),
    ("query_filter", "get", "/datasets/ds_x/records?label=con%00trol", {}, ["query", "label"]),
    ("query_cursor", "get", "/datasets?cursor=ds_%00", {}, ["query", "cursor"]),
    ("json_string", "post", "/finetune-jobs", {"json": {"dataset_id": "ds_\x00"}}, ["body", "dataset_id"]),
    ("json_nested_key", "post", "/generate", {"json": {"adapter_id": "ad_x", "counts": {"con\x00trol": 5}}},
     ["body", "counts", "con\x00trol"]),
    ("form_field", "post", "/datasets", {"files": {"file": ("a.csv", csv_bytes(balanced_rows(3)))},
                                         "data": {"name": "pilot\x00"}}, ["body", "name"]),
]


class TestNulBytes:
    @pytest.mark.parametrize(("method", "path", "kwargs", "loc"), [c[1:] for c in NUL_REQUESTS],
                             ids=[c[0] for c in NUL_REQUESTS])
    def test_refused_with_422_naming_the_field(self, client, db, auth, method, path, kwargs, loc):
        response = getattr(client, method)(path, headers=auth, **kwargs)
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["error"] == "InvalidInput"
        assert payload["errors"] == [{"type": "nul_byte", "loc": loc, "msg": payload["errors"][0]["msg"]}]
        assert payload["detail"].startswith(".".join(loc) + ": holds a NUL byte")
        assert stored(db) == (0, 0, 0)

    def test_file_name_refused(self, client, db, auth):
        body, headers = nul_in_file_name()
        response = client.post("/datasets", content=body, headers={**auth, **headers})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", "file"]
        assert stored(db) == (0, 0, 0)

    @pytest.mark.parametrize(
        ("filename", "data", "where"),
        [
            ("t.csv", csv_bytes([["S000", "the boy\x00 takes a cookie from the jar on the shelf", 0]]),
             {"row": 2, "column": "text"}),
            ("t.jsonl", jsonl_bytes([{"id": "S\x00", "text": "the boy takes a cookie", "label": 0}]),
             {"row": 1, "column": "id"}),
            ("t.cha", (FIXTURES / "adress_control.cha").read_bytes().replace(b"\n", b"\n\x00", 1),
             {"row": 2, "file": "t.cha"}),
        ],
        ids=["csv_cell", "jsonl_value", "chat_file"],
    )
    def test_in_an_uploaded_file_is_a_located_error(self, client, db, auth, filename, data, where):
        response = upload(client, auth, data, filename)
        assert response.status_code == 422, response.text
        [issue] = [i for i in response.json()["report"]["errors"] if i["code"] == "nul_byte"]
        assert {key: issue[key] for key in where} == where
        assert "NUL byte" in issue["message"]
        assert stored(db) == (0, 0, 0)


class TestOverflowingNumbers:
    @pytest.mark.parametrize("value", [str(2**64), "9" * 5000], ids=["past_64_bits", "past_4300_digits"])
    def test_records_cursor(self, client, auth, value):
        dataset_id = upload_small_dataset(client, auth)["id"]
        response = client.get(f"/datasets/{dataset_id}/records", headers=auth, params={"cursor": value})
        assert response.status_code == 422, response.text
        assert "is not a next_cursor this list returned" in response.json()["detail"]

    @pytest.mark.parametrize("value", [str(2**63), "9" * 5000], ids=["past_64_bits", "past_4300_digits"])
    def test_events_after(self, client, auth, value):
        job_id = queued_job(client, auth)["id"]
        response = client.get(f"/finetune-jobs/{job_id}/events", headers=auth, params={"after": value})
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("query.after: ")


UNUSABLE_BASE_MODELS = [("a" * 300, "part_over_255_bytes"), ("~nosuchuser/model", "unknown_home")]


class TestUnusableBaseModel:
    @pytest.mark.parametrize("name", [n for n, _ in UNUSABLE_BASE_MODELS], ids=[i for _, i in UNUSABLE_BASE_MODELS])
    def test_upload_refused_with_422(self, client, db, auth, name):
        response = upload(client, auth, csv_bytes(balanced_rows(3)), base_model=name)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "UnknownModel"
        assert stored(db) == (0, 0, 0)

    @pytest.mark.parametrize("name", [n for n, _ in UNUSABLE_BASE_MODELS], ids=[i for _, i in UNUSABLE_BASE_MODELS])
    def test_finetune_job_refused_with_422(self, client, db, auth, name):
        dataset_id = upload_small_dataset(client, auth)["id"]
        response = client.post("/finetune-jobs", headers=auth, json={"dataset_id": dataset_id, "base_model": name})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "UnknownModel"
        assert stored(db)[2] == 0


class TestReportCap:
    def test_many_bad_lines_list_the_cap_and_count_them_all(self, client, db, auth):
        response = upload(client, auth, b"{\n" * 10_000, "bad.jsonl")
        assert response.status_code == 422, response.text
        report = response.json()["report"]
        assert [e["row"] for e in report["errors"]] == [1, 2, 3, 4, 5]
        assert (report["errors_total"], report["errors_truncated"]) == (10_000, True)
        assert report["error_counts"] == {"invalid_json": 10_000}
        assert response.json()["detail"].startswith("the upload has 10000 error(s); first: line 1: not valid JSON")
        assert len(response.content) < 5_000
        assert stored(db) == (0, 0, 0)

    def test_stored_warnings_are_capped_and_counted(self, client, auth):
        rows = [[f"S{i:03d}", f"too short {i}", i % 2] for i in range(40)]
        response = upload(client, auth, csv_bytes(rows))
        assert response.status_code == 201, response.text
        report = response.json()["report"]
        assert len(report["warnings"]) == MAX_LISTED
        assert report["warnings_total"] >= 40 and report["warnings_truncated"] is True
        assert (report["errors"], report["errors_total"], report["errors_truncated"]) == ([], 0, False)


class TestKeyCache:
    """A verified key is trusted for SYNTHAUG_KEY_CACHE_SECONDS without a database read; a revoked one
    is refused once that passes, and never cached while it is bad."""

    @pytest.fixture
    def clock(self, monkeypatch) -> list[float]:
        now = [1000.0]
        monkeypatch.setattr("app.services.auth.time.monotonic", lambda: now[0])
        return now

    @staticmethod
    def key_reads(db) -> list[str]:
        reads: list[str] = []

        def seen(_conn, _cursor, statement, *_args) -> None:
            if "FROM api_keys" in statement:
                reads.append(statement)

        event.listen(db.engine, "before_cursor_execute", seen)
        return reads

    @staticmethod
    def revoke_all(db) -> None:
        with db.transaction() as session:
            session.execute(update(ApiKey).values(revoked_at=utcnow()))

    def test_a_known_key_is_read_once_per_ttl_then_again(self, client, auth, db, clock):
        reads = self.key_reads(db)
        assert client.get("/datasets", headers=auth).status_code == 200
        assert client.post("/prompt-sets", headers=auth, json={}).status_code == 422  # a body: admission
        assert client.get("/corpora", headers=auth).status_code == 200
        assert len(reads) == 1
        clock[0] += 5.0  # the default TTL has passed
        assert client.get("/datasets", headers=auth).status_code == 200
        assert len(reads) == 2

    def test_a_revoked_key_is_refused_once_the_ttl_passed(self, client, auth, db, clock):
        assert client.get("/datasets", headers=auth).status_code == 200
        self.revoke_all(db)
        clock[0] += 4.9
        assert client.get("/datasets", headers=auth).status_code == 200  # within the documented window
        clock[0] += 0.1
        for method in ("get", "post"):
            response = client.request(method, "/datasets", headers=auth)
            assert response.status_code == 401 and "revoked" in response.json()["detail"]

    def test_bad_keys_are_read_every_time_and_never_kept(self, client, db, clock):
        reads = self.key_reads(db)
        for _ in range(3):
            assert client.get("/datasets", headers={"X-API-Key": "sk_syn_wrong"}).status_code == 401
        assert len(reads) == 3 and len(client.app.state.key_cache._tenants) == 0

    def test_ttl_zero_reads_every_request(self, settings, db, auth, clock):
        settings = settings.model_copy(update={"key_cache_seconds": 0})
        with TestClient(create_app(settings, db=db)) as client:
            reads = self.key_reads(db)
            assert client.get("/datasets", headers=auth).status_code == 200
            self.revoke_all(db)
            assert client.get("/datasets", headers=auth).status_code == 401
            assert len(reads) == 2

    def test_the_cache_keeps_the_most_recent_keys_only(self, clock):
        cache = KeyCache(ttl_s=5, max_entries=2)
        for name in ("a", "b", "c"):
            cache.put(name, f"tenant-{name}")
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "tenant-b", "tenant-c")
        clock[0] += 5
        assert cache.get("c") is None
