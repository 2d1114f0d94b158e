"""POST /generate and GET /generations/{id}."""

from __future__ import annotations

import pytest

from tests.api.factories import insert_corpus


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
            "temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_tokens": 200, "seed": 42, "batch_size": 8,
        }
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


class TestGenerateInvalid:
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
         ({"max_tokens": 0}, "max_tokens"), ({"top_k": -1}, "top_k"), ({"label": None}, "label")],
        ids=["n_0", "top_p_1.5", "temperature_0", "max_tokens_0", "top_k_negative", "label_missing"],
    )
    def test_bad_sampling_parameters_are_422(self, client, auth, adapter_id, queue, change, field):
        body = {"adapter_id": adapter_id, "label": "control", "n": 4, **change}
        body = {k: v for k, v in body.items() if v is not None}
        response = client.post("/generate", headers=auth, json=body)
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert f"body.{field}" in response.json()["detail"]
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
