"""The embedded SQLite service behind a real uvicorn: readers and slow clients never block writers,
concurrent readers all get answers, and open event streams pin nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.db.migrate import upgrade
from app.db.session import Database
from app.main import create_app
from app.settings import Settings
from tests.api.factories import (
    create_job,
    insert_adapter,
    insert_corpus,
    insert_generation,
    tenant_id_of,
    upload_small_dataset,
    write_adapter_files,
)
from tests.conftest import TEST_PEPPER, RecordingQueue, make_key
from tests.live_server import served


@dataclass
class Live:
    url: str
    headers: dict[str, str]
    db: Database
    db_path: Path
    tmp_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


@pytest.fixture
def live(tmp_path) -> Live:
    """The API on a fresh SQLite file with its production pool, served by uvicorn."""
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path)
    upgrade(settings.resolved_database_url)
    db = Database.of(settings, RecordingQueue())
    headers = {"Authorization": f"Bearer {make_key(db, settings, 'tenant-a')}"}
    try:
        with served(create_app(settings, db=db)) as url:
            yield Live(url, headers, db, tmp_path / "synthaug.db", tmp_path)
    finally:
        db.dispose()


def write_seconds(db_path: Path, timeout_s: float = 2.0) -> float:
    """Seconds a write transaction from another connection takes to commit (it fails past timeout_s)."""
    connection = sqlite3.connect(db_path, timeout=timeout_s, isolation_level=None)
    started = time.monotonic()
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("UPDATE tenants SET name = name")
        connection.execute("COMMIT")
    finally:
        connection.close()
    return time.monotonic() - started


class TestReadsDoNotLockWriters:
    def test_a_read_transaction_leaves_the_write_lock_free(self, live):
        with live.db.transaction(write=False) as session:
            session.execute(text("SELECT count(*) FROM tenants"))
            assert write_seconds(live.db_path) < 1.0

    def test_a_paused_export_download_does_not_block_a_writer(self, live):
        tenant_id = tenant_id_of(live.db, "tenant-a")
        adapter_id = insert_adapter(live.db, tenant_id, write_adapter_files(live.tmp_path / "adapter"))
        corpus_id = insert_corpus(live.db, tenant_id)
        # About 20 MB of JSONL: far more than the socket buffers take while the client does not read.
        texts = [f"sample {i} " + "words " * 700 for i in range(5000)]
        insert_generation(live.db, tenant_id, adapter_id, corpus_id, "control", texts)
        with live.client() as client:
            with client.stream("GET", f"/corpora/{corpus_id}/export", headers=live.headers) as response:
                assert response.status_code == 200
                chunks = response.iter_bytes()
                received = [next(chunks)]
                time.sleep(0.5)  # the server is now blocked on the paused client
                assert write_seconds(live.db_path) < 1.0
                received.extend(chunks)
        rows = [json.loads(line) for line in b"".join(received).decode().splitlines()]
        assert [row["text"] for row in rows] == texts
        assert [row["id"] for row in rows] == sorted({row["id"] for row in rows})


class TestConcurrentReaders:
    def test_fifty_readers_of_one_dataset_all_get_answers(self, live):
        with live.client() as client:
            dataset = upload_small_dataset(client, live.headers)
        outcomes = asyncio.run(read_for(live, f"/datasets/{dataset['id']}", clients=50, seconds=2.0))
        errors = [outcome for outcome in outcomes if outcome != 200]
        assert errors == []
        assert len(outcomes) >= 50


async def read_for(live: Live, path: str, *, clients: int, seconds: float) -> list[int | str]:
    """Status codes (or exception names) of ``clients`` concurrent loops of GET ``path`` for ``seconds``."""
    outcomes: list[int | str] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=live.url, timeout=10,
                                 limits=httpx.Limits(max_connections=clients)) as client:
        async def loop() -> None:
            while time.monotonic() < deadline:
                try:
                    outcomes.append((await client.get(path, headers=live.headers)).status_code)
                except httpx.HTTPError as error:
                    outcomes.append(type(error).__name__)

        await asyncio.gather(*(loop() for _ in range(clients)))
    return outcomes


def open_streams() -> float:
    return REGISTRY.get_sample_value("synthaug_event_streams_open")


class TestEventStreamsPinNothing:
    def test_fifty_streams_on_a_queued_job_leave_the_api_answering_and_end_with_their_clients(self, live):
        with live.client() as client:
            dataset = upload_small_dataset(client, live.headers)
            job = create_job(client, live.headers, dataset["id"]).json()
        before = open_streams()
        elapsed = asyncio.run(streams_then_read(live, job["id"], f"/datasets/{dataset['id']}", streams=50))
        assert elapsed < 2.0
        deadline = time.monotonic() + 5
        while open_streams() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_streams() == before


async def streams_then_read(live: Live, job_id: str, path: str, *, streams: int) -> float:
    """Open ``streams`` event streams on the job, then time one GET of ``path`` while they are open;
    the streams' clients leave at the end."""
    before = open_streams()
    release = asyncio.Event()
    headers = {**live.headers, "Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=live.url, timeout=10,
                                 limits=httpx.Limits(max_connections=streams + 1)) as client:
        async def listen() -> None:
            async with client.stream("GET", f"/finetune-jobs/{job_id}/events", headers=headers) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()  # kept: a dropped iterator closes the connection
                await anext(lines)
                await release.wait()

        listeners = [asyncio.create_task(listen()) for _ in range(streams)]
        deadline = time.monotonic() + 10
        while open_streams() < before + streams:
            assert time.monotonic() < deadline, f"{open_streams() - before} of {streams} streams opened {[t.exception() for t in listeners if t.done()][:2]}"
            await asyncio.sleep(0.05)
        started = time.monotonic()
        response = await client.get(path, headers=live.headers)
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        release.set()
        await asyncio.gather(*listeners)
    return elapsed
