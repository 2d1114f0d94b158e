"""GET /corpora, GET /corpora/{id}, GET /corpora/{id}/samples, GET /corpora/{id}/export."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.api.factories import DEFAULT_PARAMS, insert_corpus, insert_generation

CONTROL_TEXTS = [
    "The boy is taking cookies from the jar while the stool tips over.",
    'She said, "the sink is overflowing", and kept drying the plate.',
    "A girl reaches up for a cookie.\nThe mother looks out of the window.",
]
IMPAIRED_TEXTS = [
    "uh the boy the boy is um taking the the thing",
    "um there is water uh on the floor and stuff",
]


@pytest.fixture
def corpus_id(db, tenant_id, adapter_id) -> str:
    """A corpus of three control and two impaired samples from two generations."""
    corpus_id = insert_corpus(db, tenant_id, name="pilot corpus")
    insert_generation(db, tenant_id, adapter_id, corpus_id, "control", CONTROL_TEXTS)
    insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", IMPAIRED_TEXTS)
    return corpus_id


def export(client, auth, corpus_id: str, **params):
    return client.get(f"/corpora/{corpus_id}/export", headers=auth, params=params)


def exported_rows(response, fmt: str) -> list[dict]:
    assert response.status_code == 200, response.text
    if fmt == "jsonl":
        return [json.loads(line) for line in response.text.split("\n") if line]
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


class TestList:
    def test_newest_first_with_cursor(self, client, auth, db, tenant_id):
        ids = [insert_corpus(db, tenant_id, name=f"c{i}") for i in range(3)]
        first = client.get("/corpora", headers=auth, params={"limit": 2}).json()
        second = client.get("/corpora", headers=auth, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [c["id"] for c in first["data"] + second["data"]] == ids[::-1]
        assert second["next_cursor"] is None

    def test_other_tenant_sees_none(self, client, other_auth, corpus_id):
        assert client.get("/corpora", headers=other_auth).json() == {"data": [], "next_cursor": None}


class TestDetail:
    def test_counts_and_quality_per_label(self, client, auth, corpus_id):
        response = client.get(f"/corpora/{corpus_id}", headers=auth)
        assert response.status_code == 200
        corpus = response.json()
        assert (corpus["id"], corpus["name"]) == (corpus_id, "pilot corpus")
        assert corpus["counts"] == {"control": 3, "impaired": 2}
        assert set(corpus["quality"]) == {"control", "impaired"}
        control, impaired = corpus["quality"]["control"], corpus["quality"]["impaired"]
        assert (control["n"], impaired["n"]) == (3, 2)
        assert control["fillers_per_100_words"] == 0.0
        assert impaired["fillers_per_100_words"] > 10
        assert impaired["repetitions_per_100_words"] > control["repetitions_per_100_words"]

    def test_empty_corpus(self, client, auth, db, tenant_id):
        corpus_id = insert_corpus(db, tenant_id)
        corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        assert (corpus["counts"], corpus["quality"]) == ({}, {})

    def test_other_tenant_is_404(self, client, other_auth, corpus_id):
        response = client.get(f"/corpora/{corpus_id}", headers=other_auth)
        assert response.status_code == 404
        assert response.json() == {"error": "NotFound", "detail": f"corpus '{corpus_id}' not found"}


class TestSamples:
    def test_pages_in_order_with_provenance(self, client, auth, corpus_id, adapter_id):
        texts, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/corpora/{corpus_id}/samples", headers=auth, params=params).json()
            assert len(page["data"]) <= 2
            texts += [s["text"] for s in page["data"]]
            sample = page["data"][0]
            assert sample["provenance"]["adapter_id"] == adapter_id
            assert sample["provenance"]["params"] == DEFAULT_PARAMS
            assert sample["provenance"]["index"] == sample["index"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert texts == CONTROL_TEXTS + IMPAIRED_TEXTS

    def test_label_filter(self, client, auth, corpus_id):
        page = client.get(f"/corpora/{corpus_id}/samples", headers=auth, params={"label": "impaired", "limit": 1}).json()
        assert [s["text"] for s in page["data"]] == IMPAIRED_TEXTS[:1]
        rest = client.get(
            f"/corpora/{corpus_id}/samples", headers=auth,
            params={"label": "impaired", "limit": 1, "cursor": page["next_cursor"]},
        ).json()
        assert [s["text"] for s in rest["data"]] == IMPAIRED_TEXTS[1:]
        assert rest["next_cursor"] is None
        assert [s["label"] for s in rest["data"]] == ["impaired"]

    def test_other_tenant_is_404(self, client, other_auth, corpus_id):
        assert client.get(f"/corpora/{corpus_id}/samples", headers=other_auth).status_code == 404


class TestExport:
    def test_jsonl_has_every_sample_with_provenance(self, client, auth, corpus_id, adapter_id):
        response = export(client, auth, corpus_id, format="jsonl")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers["content-disposition"] == f'attachment; filename="{corpus_id}.jsonl"'
        rows = exported_rows(response, "jsonl")
        assert [(r["label"], r["text"]) for r in rows] == (
            [("control", t) for t in CONTROL_TEXTS] + [("impaired", t) for t in IMPAIRED_TEXTS]
        )
        for row in rows:
            provenance = row["provenance"]
            assert provenance["adapter_id"] == adapter_id
            assert provenance["base_model"] == "smollm2-135m-instruct"
            assert provenance["params"] == DEFAULT_PARAMS and provenance["seed"] == 0
            assert [m["role"] for m in provenance["prompt"]] == ["system", "user"]
        assert len({r["generation_id"] for r in rows}) == 2

    def test_csv_has_every_sample_with_provenance(self, client, auth, corpus_id, adapter_id):
        response = export(client, auth, corpus_id, format="csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        reader = csv.DictReader(io.StringIO(response.text, newline=""))
        assert reader.fieldnames == [
            "id", "label", "text", "generation_id", "index", "adapter_id", "base_model", "seed", "params",
        ]
        rows = list(reader)
        assert [r["text"] for r in rows] == CONTROL_TEXTS + IMPAIRED_TEXTS
        assert [r["index"] for r in rows] == ["0", "1", "2", "0", "1"]
        for row in rows:
            assert (row["adapter_id"], row["base_model"], row["seed"]) == (adapter_id, "smollm2-135m-instruct", "0")
            assert json.loads(row["params"]) == DEFAULT_PARAMS

    @pytest.mark.parametrize("fmt", ["jsonl", "csv"])
    def test_label_filter(self, client, auth, corpus_id, fmt):
        rows = exported_rows(export(client, auth, corpus_id, format=fmt, label="impaired"), fmt)
        assert [(r["label"], r["text"]) for r in rows] == [("impaired", t) for t in IMPAIRED_TEXTS]

    def test_large_corpus_streams_every_sample_once(self, client, auth, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        texts = [f"sample number {i}" for i in range(1205)]
        insert_generation(db, tenant_id, adapter_id, corpus_id, "control", texts)
        rows = exported_rows(export(client, auth, corpus_id), "jsonl")
        assert [r["text"] for r in rows] == texts

    def test_empty_csv_has_the_header(self, client, auth, db, tenant_id):
        corpus_id = insert_corpus(db, tenant_id)
        assert export(client, auth, corpus_id, format="csv").text.splitlines() == [
            "id,label,text,generation_id,index,adapter_id,base_model,seed,params"
        ]

    def test_unknown_format_is_422(self, client, auth, corpus_id):
        response = export(client, auth, corpus_id, format="xml")
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert "'xml'" in response.json()["detail"] and "jsonl, csv" in response.json()["detail"]

    def test_other_tenant_is_404(self, client, other_auth, corpus_id):
        response = export(client, other_auth, corpus_id, format="csv")
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"
