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
