"""GET /adapters, GET /adapters/{id}, GET /adapters/{id}/download."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tracemalloc

from app.services import adapters
from tests.api.factories import insert_adapter, write_adapter_files


class TestList:
    def test_newest_first_with_cursor(self, client, auth, db, tenant_id, tmp_path):
        ids = [insert_adapter(db, tenant_id, write_adapter_files(tmp_path / f"a{i}")) for i in range(3)]
        first = client.get("/adapters", headers=auth, params={"limit": 2}).json()
        second = client.get("/adapters", headers=auth, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [a["id"] for a in first["data"] + second["data"]] == ids[::-1]
        assert second["next_cursor"] is None

    def test_other_tenant_sees_none(self, client, other_auth, adapter_id):
        assert client.get("/adapters", headers=other_auth).json() == {"data": [], "next_cursor": None}


class TestGet:
    def test_records_base_model_and_job(self, client, auth, adapter_id):
        response = client.get(f"/adapters/{adapter_id}", headers=auth)
        assert response.status_code == 200
        adapter = response.json()
        assert adapter["id"] == adapter_id
        assert (adapter["base_model"], adapter["method"], adapter["prompt_set_id"]) == (
            "smollm2-135m-instruct", "qlora", "ps_default",
        )
        assert "path" not in adapter
        job = client.get(f"/finetune-jobs/{adapter['job_id']}", headers=auth).json()
        assert (job["status"], job["adapter_id"]) == ("succeeded", adapter_id)

    def test_other_tenant_is_404(self, client, other_auth, adapter_id):
        response = client.get(f"/adapters/{adapter_id}", headers=other_auth)
        assert response.status_code == 404
        assert response.json() == {"error": "NotFound", "detail": f"adapter '{adapter_id}' not found"}


class TestDownload:
    def test_tar_gz_of_the_adapter_directory(self, client, auth, adapter_id, tmp_path):
        response = client.get(f"/adapters/{adapter_id}/download", headers=auth)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/gzip"
        assert response.headers["content-disposition"] == f'attachment; filename="{adapter_id}.tar.gz"'
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
            assert sorted(tar.getnames()) == [
                f"{adapter_id}/adapter_config.json", f"{adapter_id}/adapter_model.safetensors",
            ]
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                member = tar.extractfile(f"{adapter_id}/{name}").read()
                assert member == (tmp_path / "adapter" / name).read_bytes()

    def test_missing_files_are_404(self, client, auth, adapter_id, tmp_path):
        shutil.rmtree(tmp_path / "adapter")
        response = client.get(f"/adapters/{adapter_id}/download", headers=auth)
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"
        assert "no files" in response.json()["detail"]

    def test_other_tenant_is_404(self, client, other_auth, adapter_id):
        assert client.get(f"/adapters/{adapter_id}/download", headers=other_auth).status_code == 404


class TestDownloadStreams:
    def test_a_large_adapter_is_read_and_compressed_chunk_by_chunk(self, client, auth, db, tenant_id, tmp_path):
        directory = write_adapter_files(tmp_path / "large")
        (directory / "adapter_model.safetensors").write_bytes(os.urandom(16 * 1024 * 1024))
        adapter_id = insert_adapter(db, tenant_id, directory)
        response = client.get(f"/adapters/{adapter_id}/download", headers=auth)
        assert response.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                assert tar.extractfile(f"{adapter_id}/{name}").read() == (directory / name).read_bytes()
        with db.transaction() as session:
            adapter = adapters.get(session, tenant_id, adapter_id)
        tracemalloc.start()
        try:
            chunks = sum(1 for _chunk in adapters.archive(adapter))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # 16 MiB that gzip cannot shrink, never held whole: at most a few 64 KiB chunks at a time.
        assert chunks > 100
        assert peak < 2 * 1024 * 1024
