import pytest
from pydantic import ValidationError

from app.settings import Settings


class TestSettings:
    @pytest.mark.parametrize("env", ["test", "prod"])
    def test_outside_dev_the_dev_pepper_is_refused_at_start_up(self, env):
        with pytest.raises(ValidationError, match="SYNTHAUG_KEY_PEPPER"):
            Settings(env=env)

    def test_prod_accepts_a_real_pepper(self):
        assert Settings(env="prod", key_pepper="s3cret-from-vault").env == "prod"

    def test_defaults_are_embedded_sqlite_under_data_dir(self, tmp_path):
        settings = Settings(data_dir=tmp_path)
        assert settings.embedded
        assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'synthaug.db'}"
        assert settings.resolved_artifact_dir == tmp_path.resolve() / "artifacts"

    def test_env_prefix(self, monkeypatch):
        monkeypatch.setenv("SYNTHAUG_BROKER_URL", "redis://127.0.0.1:6379/0")
        assert not Settings().embedded

    def test_openai_key_is_never_printed(self):
        settings = Settings(openai_api_key="sk-very-secret")
        assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings.model_dump())
