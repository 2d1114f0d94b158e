"""A real PostgreSQL server stopped and started under a running API: 503s meanwhile, 200s after,
without restarting the app.

The server is a private instance (initdb into a temporary directory, a free port), never the
shared one other tests use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.db.migrate import upgrade
from app.db.models import Tenant
from app.db.session import Database
from app.deps import SessionDep
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_PEPPER, make_key


def postgres_bin_dir() -> Path | None:
    """The directory of initdb and pg_ctl: $SYNTHAUG_TEST_PG_BIN, PATH, or the newest Debian install."""
    if os.environ.get("SYNTHAUG_TEST_PG_BIN"):
        return Path(os.environ["SYNTHAUG_TEST_PG_BIN"])
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        return Path(shutil.which("pg_ctl")).parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return installed[-1].parent if installed else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrivatePostgres:
    """One PostgreSQL instance owned by this test module."""

    bin_dir: Path
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres?connect_timeout=5"

    def run(self, tool: str, *args: str) -> None:
        # initdb and the server refuse to run as root; the tests do run as root here and in CI.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}\n{log}")

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"), "-o", options,
                 "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; set SYNTHAUG_TEST_PG_BIN")
    root = Path(tempfile.mkdtemp(prefix="synthaug-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    instance = PrivatePostgres(bin_dir, root, free_port())
    try:
        instance.init()
        instance.start()
        upgrade(instance.url)
        yield instance
    finally:
        if instance.running():
            instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def settings(postgres, tmp_path) -> Settings:
    return Settings(
        env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, database_url=postgres.url, db_pool_timeout_s=5
    )


@pytest.fixture
def db(settings) -> Iterator[Database]:
    database = Database.of(settings)
    yield database
    database.dispose()


@pytest.fixture
def auth(db, settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(db, settings, f'tenant-{uuid.uuid4().hex[:8]}')}"}


class TestServerRestart:
    def test_503_while_down_then_200_without_restarting_the_app(self, postgres, settings, db, auth):
        with TestClient(create_app(settings, db=db)) as client:
            assert client.get("/datasets", headers=auth).status_code == 200
            assert client.get("/readyz").status_code == 200

            postgres.stop()
            try:
                down = client.get("/datasets", headers=auth)
                assert down.status_code == 503, down.text
                assert down.json()["error"] == "ServiceUnavailable"
                assert down.json()["detail"].startswith("the database is unavailable: ")
                assert int(down.headers["Retry-After"]) > 0
                ready = client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["detail"].startswith("database not reachable: ")
                assert ready.json()["checks"]["database"].startswith("failed: ")
                assert client.get("/healthz").status_code == 200
                assert client.get("/metrics").status_code == 200
            finally:
                postgres.start()

            again = client.get("/datasets", headers=auth)
            assert again.status_code == 200, again.text
            assert again.json()["data"] == []
            assert client.get("/readyz").json() == {
                "status": "ready", "checks": {"database": "ok", "broker": "not configured"},
            }


class TestConnectionLostAtCommit:
    def test_the_request_is_a_503_and_its_writes_are_rolled_back(self, settings, db):
        """The request's transaction dies between its last statement and the commit of the session
        dependency: the client gets the 503, not a 200 for writes that never happened."""
        app = create_app(settings, db=db)
        name = f"lost-{uuid.uuid4().hex}"

        @app.post("/test-write-then-lose-the-connection")
        def write_then_lose_the_connection(session: SessionDep):
            session.add(Tenant(name=name))
            session.flush()
            backend = session.scalar(text("SELECT pg_backend_pid()"))
            with db.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            return {"written": name}

        with TestClient(app) as client:
            response = client.post("/test-write-then-lose-the-connection")
            assert response.status_code == 503, response.text
            assert response.json()["detail"].startswith("the database is unavailable: ")
            assert client.get("/readyz").status_code == 200
        with db.transaction() as session:
            assert session.scalar(select(Tenant).where(Tenant.name == name)) is None
