"""POST /generate and GET /generations/{id}."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from app.db.models import Adapter, FinetuneJob, Generation
from app.settings import Settings
from tests.conftest import TEST_PEPPER
from tests.api.factories import insert_adapter, insert_corpus, write_adapter_files


def generate(client, auth, adapter_id: str, **body):
    return client.post("/generate", headers=auth, json={"adapter_id": adapter_id, "label": "impaired", "n": 4, **body})


class TestGenerate:
    def test_accepted_queued_and_enqueued(self, client, auth, adapter_id, queue):
        response = generate(client, auth, adapter_id, n=12, temperature=0.7, top_p=0.9, top_k=0, seed=42)
        assert response.status_code == 202, response.text
        generation = response.json()
        assert generation["id"].startswith("gen_")
        assert (generation["status"], generation["n"], generation["done"], generation["label"]) == (
            "queued", 12, 0, "impaired",
        )
        assert generation["params"] == {
            "temperature": 0.7, "top_p": 0.9, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
            "max_tokens": 256, "stop": [], "seed": 42,
        }
        assert (generation["counts"], generation["sampler"], generation["batch_size"]) == ({"impaired": 12}, "hf", None)
        assert generation["filters"]["memorization_ngram"] == 8 and not generation["filters"]["keep_truncated"]
        assert (generation["candidates"], generation["rejected"], generation["budget_exhausted"]) == (0, {}, False)
        assert queue.sent == [("generation.run", generation["id"])]

    def test_new_corpus_when_none_given(self, client, auth, adapter_id):
        first = generate(client, auth, adapter_id).json()
        second = generate(client, auth, adapter_id).json()
        assert first["corpus_id"] != second["corpus_id"]
        corpus = client.get(f"/corpora/{first['corpus_id']}", headers=auth).json()
        assert (corpus["name"], corpus["counts"]) == (f"synthetic from {adapter_id}", {})

    def test_appends_to_the_given_corpus(self, client, auth, adapter_id):
        corpus_id = generate(client, auth, adapter_id, label="control").json()["corpus_id"]
        appended = generate(client, auth, adapter_id, label="impaired", corpus_id=corpus_id)
        assert appended.status_code == 202
        assert appended.json()["corpus_id"] == corpus_id
        assert [c["id"] for c in client.get("/corpora", headers=auth).json()["data"]] == [corpus_id]

    def test_a_submission_is_three_statements(self, client, auth, adapter_id, db):
        """The adapter, its job's data set and its prompt set in one read, the corpus, the insert: the
        key is cached after the first request, and nothing else is read (bench/api.py's submit)."""
        corpus_id = generate(client, auth, adapter_id, label="control").json()["corpus_id"]
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute",
                     lambda _conn, _cursor, statement, *_args: statements.append(statement.split()[0]))
        assert generate(client, auth, adapter_id, corpus_id=corpus_id).status_code == 202
        # SAVEPOINT / RELEASE: the test's outer transaction; a server's session sends BEGIN / COMMIT.
        assert [s for s in statements if s not in ("SAVEPOINT", "RELEASE")] == ["SELECT", "SELECT", "INSERT"]

    def test_several_labels_in_one_generation(self, client, auth, adapter_id):
        response = client.post("/generate", headers=auth, json={
            "adapter_id": adapter_id, "counts": {"control": 3, "impaired": 5}, "sampler": "hf", "batch_size": 4,
        })
        assert response.status_code == 202, response.text
        generation = response.json()
        assert (generation["label"], generation["n"], generation["counts"]) == (None, 8, {"control": 3, "impaired": 5})
        assert generation["progress"] == {"control": {"accepted": 0, "rejected": 0},
                                          "impaired": {"accepted": 0, "rejected": 0}}
        assert generation["batch_size"] == 4

    def test_new_corpus_belongs_to_the_adapters_dataset(self, client, auth, db, adapter_id):
        corpus_id = generate(client, auth, adapter_id).json()["corpus_id"]
        dataset_id = client.get(f"/corpora/{corpus_id}", headers=auth).json()["dataset_id"]
        with db.transaction() as session:
            assert dataset_id == session.get(FinetuneJob, session.get(Adapter, adapter_id).job_id).dataset_id


class TestGenerateInvalid:
    def test_a_corpus_of_another_dataset_is_422(self, client, auth, db, tenant_id, adapter_id, tmp_path, queue):
        other = insert_adapter(db, tenant_id, write_adapter_files(tmp_path / "other"))
        corpus_id = generate(client, auth, other).json()["corpus_id"]
        queue.sent.clear()
        response = generate(client, auth, adapter_id, corpus_id=corpus_id)
        assert response.status_code == 422
        assert "Generate into a new corpus" in response.json()["detail"] and adapter_id in response.json()["detail"]
        assert queue.sent == []

    def test_an_unknown_label_in_counts_is_422(self, client, auth, adapter_id):
        response = client.post("/generate", headers=auth,
                               json={"adapter_id": adapter_id, "counts": {"control": 1, "mci": 2}})
        assert response.status_code == 422 and "'mci'" in response.json()["detail"]

    def test_vllm_without_a_server_is_422(self, client, auth, adapter_id, queue):
        response = generate(client, auth, adapter_id, sampler="vllm")
        assert response.status_code == 422
        assert "SYNTHAUG_VLLM_BASE_URL" in response.json()["detail"]
        assert queue.sent == []

    def test_unknown_label_is_422_and_creates_nothing(self, client, auth, adapter_id, queue):
        response = generate(client, auth, adapter_id, label="mci")
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert "'mci'" in response.json()["detail"] and "control, impaired" in response.json()["detail"]
        assert queue.sent == []
        assert client.get("/corpora", headers=auth).json()["data"] == []

    @pytest.mark.parametrize(
        ("change", "field"),
        [({"n": 0}, "n"), ({"top_p": 1.5}, "top_p"), ({"temperature": 0}, "temperature"),
         ({"max_tokens": 0}, "max_tokens"), ({"top_k": -1}, "top_k"), ({"label": None}, "give label and n"),
         ({"min_p": 1.0}, "body.min_p"), ({"repetition_penalty": 0.5}, "body.repetition_penalty"),
         ({"stop": [""]}, "body.stop"), ({"bogus": 1}, "body.bogus"), ({"counts": {"control": 2}}, "not both"),
         ({"filters": {"min_words": -1}}, "body.filters.min_words"), ({"sampler": "gpt"}, "body.sampler")],
        ids=["n_0", "top_p_1.5", "temperature_0", "max_tokens_0", "top_k_negative", "label_missing", "min_p_1",
             "penalty_below_1", "empty_stop", "unknown_field", "counts_and_label", "negative_min_words",
             "unknown_sampler"],
    )
    def test_bad_sampling_parameters_are_422(self, client, auth, adapter_id, queue, change, field):
        body = {"adapter_id": adapter_id, "label": "control", "n": 4, **change}
        body = {k: v for k, v in body.items() if v is not None}
        response = client.post("/generate", headers=auth, json=body)
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert field in response.json()["detail"]
        assert queue.sent == []

    def test_other_tenants_adapter_is_404(self, client, other_auth, adapter_id, queue):
        response = generate(client, other_auth, adapter_id)
        assert response.status_code == 404
        assert response.json() == {"error": "NotFound", "detail": f"adapter '{adapter_id}' not found"}
        assert queue.sent == []

    def test_other_tenants_corpus_is_404(self, client, auth, db, other_tenant_id, adapter_id, queue):
        corpus_id = insert_corpus(db, other_tenant_id)
        response = generate(client, auth, adapter_id, corpus_id=corpus_id)
        assert response.status_code == 404
        assert corpus_id in response.json()["detail"]
        assert queue.sent == []

    def test_unknown_adapter_is_404(self, client, auth):
        assert generate(client, auth, "ad_missing").status_code == 404


class TestLimits:
    """Requests beyond the server's limits are refused before anything is stored or sent."""

    @pytest.fixture
    def settings(self, tmp_path, cache_dir) -> Settings:
        # The real prepared model's config, so the KV cache estimate is the one the server makes.
        return Settings(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path, cache_dir=cache_dir,
                        max_generation_samples=50, hf_max_kv_cache_bytes=1024**3)

    def refused(self, client, auth, adapter_id, queue, **body) -> dict:
        response = generate(client, auth, adapter_id, **body)
        assert response.status_code == 422, response.text
        assert queue.sent == [] and client.get("/corpora", headers=auth).json()["data"] == []
        return response.json()

    def test_the_issues_batch_256_at_8192_tokens_is_refused(self, client, auth, adapter_id, queue):
        body = self.refused(client, auth, adapter_id, queue, batch_size=256, max_tokens=8192)
        assert (body["parameter"], body["value"], body["limit"]) == ("max_tokens", 8192, 2048)
        assert "SYNTHAUG_MAX_SAMPLE_TOKENS" in body["detail"]

    def test_batch_tokens_over_the_budget(self, client, auth, adapter_id, queue):
        body = self.refused(client, auth, adapter_id, queue, batch_size=256, max_tokens=2048)
        assert body["parameter"].startswith("batch_size x (256 prompt tokens + max_tokens)")
        assert (body["value"], body["limit"]) == (256 * (256 + 2048), 262_144)

    def test_kv_cache_estimate_from_the_base_models_config(self, client, auth, adapter_id, queue, cache_dir):
        if not (cache_dir / "models" / "smollm2-135m-instruct" / "config.json").is_file():
            pytest.skip("the default base model is not prepared in the cache")
        # SmolLM2-135M: 30 layers x 3 kv heads x 64 dims x keys and values x 4 bytes = 46,080 bytes a token.
        body = self.refused(client, auth, adapter_id, queue, batch_size=64, max_tokens=256)
        assert "KV cache" in body["parameter"] and "SYNTHAUG_HF_MAX_KV_CACHE_BYTES" in body["detail"]
        assert (body["value"], body["limit"]) == (64 * 512 * 46_080, 1024**3)
        assert generate(client, auth, adapter_id, batch_size=32, max_tokens=256).status_code == 202

    def test_batch_size_and_total_samples(self, client, auth, adapter_id, queue):
        body = self.refused(client, auth, adapter_id, queue, batch_size=512, max_tokens=16)
        assert (body["parameter"], body["value"], body["limit"]) == ("batch_size", 512, 256)
        body = self.refused(client, auth, adapter_id, queue, label=None, n=None, counts={"control": 30, "impaired": 21})
        assert (body["parameter"], body["value"], body["limit"]) == ("n (the sum of counts)", 51, 50)


class TestGetGeneration:
    def test_progress(self, client, auth, adapter_id):
        created = generate(client, auth, adapter_id).json()
        response = client.get(f"/generations/{created['id']}", headers=auth)
        assert response.status_code == 200
        assert response.json() == created

    def test_other_tenant_is_404(self, client, auth, other_auth, adapter_id):
        created = generate(client, auth, adapter_id).json()
        response = client.get(f"/generations/{created['id']}", headers=other_auth)
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"

    def test_unknown_id_is_404(self, client, auth):
        assert client.get("/generations/gen_missing", headers=auth).status_code == 404


class TestCancelGeneration:
    def test_a_queued_generation_is_cancelled_at_once_and_its_message_revoked(self, client, auth, adapter_id, queue):
        generation = generate(client, auth, adapter_id).json()
        response = client.post(f"/generations/{generation['id']}/cancel", headers=auth)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["status"], body["cancel_requested"], body["finished_at"] is not None) == ("cancelled", True, True)
        assert queue.revoked == [("generation.run", generation["id"])]
        assert client.get(f"/generations/{generation['id']}", headers=auth).json()["status"] == "cancelled"

    def test_a_running_generation_is_asked_to_stop(self, client, auth, db, adapter_id, queue):
        generation = generate(client, auth, adapter_id).json()
        with db.transaction() as s:
            s.get(Generation, generation["id"]).status = "running"
        body = client.post(f"/generations/{generation['id']}/cancel", headers=auth).json()
        assert (body["status"], body["cancel_requested"]) == ("running", True)
        assert queue.revoked == []

    @pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
    def test_a_finished_generation_is_409(self, client, auth, db, adapter_id, status):
        generation = generate(client, auth, adapter_id).json()
        with db.transaction() as s:
            s.get(Generation, generation["id"]).status = status
        response = client.post(f"/generations/{generation['id']}/cancel", headers=auth)
        assert response.status_code == 409 and status in response.json()["detail"]

    def test_another_tenants_generation_is_404(self, client, auth, other_auth, adapter_id):
        generation = generate(client, auth, adapter_id).json()
        response = client.post(f"/generations/{generation['id']}/cancel", headers=other_auth)
        assert response.status_code == 404
        assert client.get(f"/generations/{generation['id']}", headers=auth).json()["status"] == "queued"
