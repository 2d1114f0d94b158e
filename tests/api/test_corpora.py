"""GET /corpora, GET /corpora/{id}, its samples, export and report (JSON and page)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import delete, event, select, update

from app.db import repositories as repo
from app.db.base import utcnow
from app.domain.markers import summarise
from app.db.models import Corpus, Sample
from app.services import corpora
from tests.api.factories import (
    DEFAULT_PARAMS, balanced_rows, csv_bytes, insert_adapter, insert_corpus, insert_generation, make_text, upload,
    write_adapter_files,
)

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

    def test_quality_is_summed_without_reading_a_text(self, client, auth, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        generation_id = insert_generation(db, tenant_id, adapter_id, corpus_id, "control", CONTROL_TEXTS)
        late = "well uh the the water is um running over"
        with db.transaction() as session:  # the worker's path: one multi-row INSERT ... ON CONFLICT
            repo.insert_samples(session, [dict(
                corpus_id=corpus_id, generation_id=generation_id, index=99, label="impaired", text=late,
                status="accepted", checks={}, provenance={}, created_at=utcnow())])
        statements = []
        record = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        assert corpus["quality"] == {"control": summarise(CONTROL_TEXTS), "impaired": summarise([late])}
        assert corpus["quality"]["impaired"]["repetitions_per_100_words"] > 0
        # The tallies the triggers keep: a handful of rows, whatever the corpus's size.
        assert [s for s in statements if "FROM corpus_tallies" in s]
        assert not [s for s in statements if "FROM samples" in s]

    def test_a_sample_stored_twice_counts_once_and_a_deleted_one_not_at_all(self, client, auth, db, tenant_id,
                                                                             adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        generation_id = insert_generation(db, tenant_id, adapter_id, corpus_id, "control", CONTROL_TEXTS,
                                          rejected=[("cut", "truncated")])
        other = insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", ["uh the the boy"])
        late = [dict(corpus_id=corpus_id, generation_id=generation_id, index=50 + i, label="control", text=text,
                     status="accepted", checks={}, provenance={}, created_at=utcnow())
                for i, text in enumerate(["the girl waves", "the boy falls"])]
        for _ in range(2):  # a redelivered chunk: ON CONFLICT DO NOTHING stores, and counts, each once
            with db.transaction() as session:
                repo.insert_samples(session, late)
        corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        texts = CONTROL_TEXTS + ["the girl waves", "the boy falls"]
        assert corpus["counts"] == {"control": len(texts), "impaired": 1}
        assert corpus["rejected"] == {"control": {"truncated": 1}}
        assert corpus["quality"]["control"] == summarise(texts)
        with db.transaction() as session:
            session.execute(delete(Sample).where(Sample.generation_id == other))
            session.execute(delete(Sample).where(Sample.generation_id == generation_id, Sample.index == 50))
        corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        assert corpus["counts"] == {"control": len(texts) - 1}
        assert corpus["quality"] == {"control": summarise(CONTROL_TEXTS + ["the boy falls"])}

    def test_empty_corpus(self, client, auth, db, tenant_id):
        corpus_id = insert_corpus(db, tenant_id)
        corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        assert (corpus["counts"], corpus["rejected"], corpus["quality"]) == ({}, {}, {})

    def test_rejected_candidates_are_counted_apart(self, client, auth, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", ["uh the boy um"],
                          rejected=[("copied", "memorized"), ("copied too", "memorized"), ("cut", "truncated")])
        corpus = client.get(f"/corpora/{corpus_id}", headers=auth).json()
        assert corpus["counts"] == {"impaired": 1}
        assert corpus["rejected"] == {"impaired": {"memorized": 2, "truncated": 1}}
        assert corpus["quality"]["impaired"]["n"] == 1

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

    def test_rejected_candidates_only_on_request_with_their_reason(self, client, auth, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        insert_generation(db, tenant_id, adapter_id, corpus_id, "control", ["kept one"],
                          rejected=[("the the the the the", "degenerate")])
        listed = lambda **p: client.get(f"/corpora/{corpus_id}/samples", headers=auth, params=p).json()["data"]
        assert [(s["text"], s["status"]) for s in listed()] == [("kept one", "accepted")]
        assert [(s["text"], s["reject_reason"]) for s in listed(status="rejected")] == [
            ("the the the the the", "degenerate")
        ]
        assert [s["status"] for s in listed(status="all")] == ["accepted", "rejected"]
        assert all(s["finish_reason"] == "stop" and "words" in s["checks"] for s in listed(status="all"))

    def test_unknown_status_is_422(self, client, auth, corpus_id):
        response = client.get(f"/corpora/{corpus_id}/samples", headers=auth, params={"status": "maybe"})
        assert response.status_code == 422 and "'maybe'" in response.json()["detail"]


class TestExport:
    def test_jsonl_has_every_accepted_sample_with_provenance(self, client, auth, corpus_id, adapter_id):
        response = export(client, auth, corpus_id, format="jsonl")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        assert response.headers["content-disposition"] == f'attachment; filename="{corpus_id}.jsonl"'
        rows = exported_rows(response, "jsonl")
        assert [(r["label"], r["text"]) for r in rows] == (
            [("control", t) for t in CONTROL_TEXTS] + [("impaired", t) for t in IMPAIRED_TEXTS]
        )
        for row in rows:
            assert row["synthetic"] is True and row["participant_id"] is None
            assert row["finish_reason"] == "stop"
            provenance = row["provenance"]
            assert provenance["adapter_id"] == adapter_id
            assert provenance["base_model"] == "smollm2-135m-instruct"
            assert provenance["params"] == DEFAULT_PARAMS and provenance["seed"] == 0
            assert [m["role"] for m in provenance["prompt"]] == ["system", "user"]
        assert len({r["generation_id"] for r in rows}) == 2

    def test_csv_has_every_accepted_sample_with_provenance(self, client, auth, corpus_id, adapter_id):
        response = export(client, auth, corpus_id, format="csv")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        reader = csv.DictReader(io.StringIO(response.text, newline=""))
        assert reader.fieldnames == [
            "id", "synthetic", "label", "text", "participant_id", "record_id", "generation_id", "index",
            "finish_reason", "adapter_id", "base_model", "sampler", "seed", "sample_seed", "params",
        ]
        rows = list(reader)
        assert [r["text"] for r in rows] == CONTROL_TEXTS + IMPAIRED_TEXTS
        assert [r["index"] for r in rows] == ["0", "1", "2", "0", "1"]
        for row in rows:
            assert (row["adapter_id"], row["base_model"], row["seed"]) == (adapter_id, "smollm2-135m-instruct", "0")
            assert (row["synthetic"], row["participant_id"], row["sampler"]) == ("True", "", "hf")
            assert json.loads(row["params"]) == DEFAULT_PARAMS

    def test_parquet_has_the_same_rows(self, client, auth, corpus_id):
        import pyarrow.parquet as pq

        response = export(client, auth, corpus_id, format="parquet")
        assert response.status_code == 200
        assert response.headers["content-disposition"] == f'attachment; filename="{corpus_id}.parquet"'
        table = pq.read_table(io.BytesIO(response.content))
        assert table.column("text").to_pylist() == CONTROL_TEXTS + IMPAIRED_TEXTS
        assert table.column("synthetic").to_pylist() == [True] * 5
        assert table.column("index").to_pylist() == [0, 1, 2, 0, 1]
        assert json.loads(table.column("params").to_pylist()[0]) == DEFAULT_PARAMS
        assert json.loads(table.column("provenance").to_pylist()[0])["prompt"][0]["role"] == "system"

    @pytest.mark.parametrize("fmt", ["jsonl", "csv"])
    def test_label_filter(self, client, auth, corpus_id, fmt):
        rows = exported_rows(export(client, auth, corpus_id, format=fmt, label="impaired"), fmt)
        assert [(r["label"], r["text"]) for r in rows] == [("impaired", t) for t in IMPAIRED_TEXTS]

    @pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
    def test_large_corpus_streams_every_sample_once(self, client, auth, db, tenant_id, adapter_id, fmt):
        import pyarrow.parquet as pq

        corpus_id = insert_corpus(db, tenant_id)
        texts = [f"sample number {i}" for i in range(1205)]
        insert_generation(db, tenant_id, adapter_id, corpus_id, "control", texts)
        response = export(client, auth, corpus_id, format=fmt)
        if fmt == "parquet":
            assert pq.read_table(io.BytesIO(response.content)).column("text").to_pylist() == texts
        else:
            assert [r["text"] for r in exported_rows(response, "jsonl")] == texts

    def test_rejected_candidates_are_never_exported(self, client, auth, db, tenant_id, adapter_id):
        corpus_id = insert_corpus(db, tenant_id)
        insert_generation(db, tenant_id, adapter_id, corpus_id, "control", ["kept one"],
                          rejected=[("the the the the the", "degenerate"), ("cut mid", "truncated")])
        assert [r["text"] for r in exported_rows(export(client, auth, corpus_id), "jsonl")] == ["kept one"]

    def test_empty_csv_has_the_header(self, client, auth, db, tenant_id):
        corpus_id = insert_corpus(db, tenant_id)
        assert export(client, auth, corpus_id, format="csv").text.splitlines() == [
            "id,synthetic,label,text,participant_id,record_id,generation_id,index,finish_reason,adapter_id,"
            "base_model,sampler,seed,sample_seed,params"
        ]

    def test_unknown_format_is_422(self, client, auth, corpus_id):
        response = export(client, auth, corpus_id, format="xml")
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert "'xml'" in response.json()["detail"] and "jsonl, csv, parquet" in response.json()["detail"]

    def test_other_tenant_is_404(self, client, other_auth, corpus_id):
        response = export(client, other_auth, corpus_id, format="csv")
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"


@pytest.fixture
def augmentable(client, auth, db, tenant_id, tmp_path) -> dict:
    """A data set with train, validation and test participants, an adapter trained on it, and a corpus."""
    rows = balanced_rows(6, splits=["train", "validation", "test"])
    response = upload(client, auth, csv_bytes(rows, header=("id", "text", "label", "split")), "splits.csv")
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    adapter_id = insert_adapter(db, tenant_id, write_adapter_files(tmp_path / "ad"), dataset_id=dataset_id)
    corpus_id = insert_corpus(db, tenant_id, dataset_id=dataset_id)
    insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", IMPAIRED_TEXTS)
    train = [r for r in rows if r[3] == "train"]
    return {"corpus_id": corpus_id, "train": train, "held_out": [r for r in rows if r[3] != "train"]}


class TestAugmentedExport:
    @pytest.mark.parametrize("fmt", ["jsonl", "csv"])
    def test_real_train_rows_then_synthetic_rows(self, client, auth, augmentable, fmt):
        response = export(client, auth, augmentable["corpus_id"], format=fmt, include_real="train")
        assert response.headers["content-disposition"].endswith(f'-augmented.{fmt}"')
        rows = exported_rows(response, fmt)
        real = [r for r in rows if r["synthetic"] in (False, "False")]
        synthetic = [r for r in rows if r["synthetic"] in (True, "True")]
        assert rows == real + synthetic
        labels = {0: "control", 1: "impaired"}
        assert [(r["participant_id"], r["text"], r["label"]) for r in real] == [
            (pid, text, labels[label]) for pid, text, label, _ in augmentable["train"]
        ]
        assert [r["text"] for r in synthetic] == IMPAIRED_TEXTS
        assert all(r["participant_id"] in (None, "") for r in synthetic)

    def test_rows_read_a_few_at_a_time_are_the_same_rows(self, client, auth, augmentable, monkeypatch):
        whole = exported_rows(export(client, auth, augmentable["corpus_id"], include_real="train"), "jsonl")
        monkeypatch.setattr(corpora, "EXPORT_CHUNK", 2)  # several chunks, boundaries in both parts
        chunked = exported_rows(export(client, auth, augmentable["corpus_id"], include_real="train"), "jsonl")
        assert chunked == whole
        assert len(whole) >= 6

    def test_a_chunk_of_rows_is_one_write_not_one_per_row(self, db, augmentable, monkeypatch):
        from app.api.corpora import _export

        monkeypatch.setattr(corpora, "EXPORT_CHUNK", 2)
        pieces = list(_export(db, augmentable["corpus_id"], "jsonl", None, True))
        lines = [line for piece in pieces for line in piece.splitlines()]
        assert len(lines) >= 6 and all(isinstance(piece, bytes) for piece in pieces)
        # Real rows, then samples, each read 2 at a time: a piece holds one chunk's lines.
        assert all(1 <= piece.count(b"\n") <= 2 for piece in pieces) and len(pieces) < len(lines)
        assert [json.loads(line)["synthetic"] for line in lines] == sorted(
            (json.loads(line)["synthetic"] for line in lines), key=bool)

    def test_postgres_writes_the_same_rows_as_python(self, db, tenant_id, augmentable):
        """On Postgres the database writes the samples' lines: the same rows as _synthetic_row, escaping included."""
        if db.engine.dialect.name != "postgresql":
            pytest.skip("the database writes JSON lines on Postgres only")
        with db.transaction(write=False) as session:
            corpus = session.get(Corpus, augmentable["corpus_id"])
            adapter_id = session.scalars(select(Sample.provenance)).first()["adapter_id"]
        texts = ['she said "no" \\ then\ttab', "caf\u00e9 \u00fc\u4e2d \U0001f600", "line\nbreak \u2028 <|im_end|>"]
        insert_generation(db, tenant_id, adapter_id, corpus.id, "control", texts)
        python_rows = [row for chunk in corpora.export_chunks(db, corpus.id, None, False) for row in chunk]
        database_lines = [line for chunk in corpora.export_sample_lines(db, corpus.id, None) for line in chunk]
        assert [json.loads(line) for line in database_lines] == python_rows
        assert [row["text"] for row in python_rows][-3:] == texts
        with db.transaction() as session:  # provenance written before these fields existed
            session.execute(update(Sample).where(Sample.corpus_id == corpus.id).values(provenance={"seed": 1}))
        lines = [json.loads(line) for chunk in corpora.export_sample_lines(db, corpus.id, "control") for line in chunk]
        rows = [row for chunk in corpora.export_chunks(db, corpus.id, "control", False) for row in chunk]
        assert lines == rows and rows[0]["sampler"] == "hf" and rows[0]["params"] == {}

    def test_held_out_participants_never_appear(self, client, auth, augmentable):
        rows = exported_rows(export(client, auth, augmentable["corpus_id"], include_real="train"), "jsonl")
        exported = {r["participant_id"] for r in rows} | {r["text"] for r in rows}
        for pid, text, _label, _split in augmentable["held_out"]:
            assert pid not in exported and text not in exported

    def test_label_filter_applies_to_real_rows_too(self, client, auth, augmentable):
        rows = exported_rows(
            export(client, auth, augmentable["corpus_id"], include_real="train", label="control"), "jsonl"
        )
        assert rows and {r["label"] for r in rows} == {"control"} and not any(r["synthetic"] for r in rows)

    @pytest.mark.parametrize("split", ["validation", "test", "val", "all"])
    def test_other_splits_are_refused(self, client, auth, augmentable, split):
        response = export(client, auth, augmentable["corpus_id"], include_real=split)
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert f"include_real='{split}'" in response.json()["detail"]
        assert "only the train split" in response.json()["detail"]

    @pytest.mark.parametrize(
        "value", ["Train", "TRAIN", "train ", " train", "train\n", "tra in", "validation,train", "train,test", "",
                  "\uff54\uff52\uff41\uff49\uff4e", "train\u200b"],
    )
    def test_anything_but_exactly_train_is_refused(self, client, auth, augmentable, value):
        response = export(client, auth, augmentable["corpus_id"], include_real=value)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert f"include_real='{value}' is refused" in response.json()["detail"]
        assert "only the train split" in response.json()["detail"]

    @pytest.mark.parametrize(
        "values", [["test", "train"], ["train", "test"], ["train", "validation"], ["train", "train"]]
    )
    def test_a_repeated_parameter_is_refused(self, client, auth, augmentable, values):
        params = [("include_real", value) for value in values]
        response = client.get(f"/corpora/{augmentable['corpus_id']}/export", headers=auth, params=params)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith(f"include_real='{values[0]}', '{values[1]}' is refused")
        assert "asked for once as include_real=train" in detail

    def test_a_data_set_stored_with_a_held_out_speaker_in_train_is_refused(self, client, auth, db, augmentable):
        # Stored before uploads compared ids ignoring case: 's000' in test is train's 'S000'.
        with db.transaction() as session:
            dataset_id = session.get(Corpus, augmentable["corpus_id"]).dataset_id
            repo.add_records(session, [{"dataset_id": dataset_id, "row": 99, "participant_id": "s000",
                                        "text": make_text(99), "label": "control", "split": "test"}])
        response = export(client, auth, augmentable["corpus_id"], include_real="train")
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith(
            f"the real train split of data set '{dataset_id}' cannot be exported: participant S000"
        )
        assert "'test' on line 99 (written 's000' there" in detail
        assert response.json()["errors"][0]["code"] == "participant_in_two_splits"
        assert export(client, auth, augmentable["corpus_id"]).status_code == 200

    def test_a_corpus_without_samples_has_no_data_set_to_add(self, client, auth, db, tenant_id):
        response = export(client, auth, insert_corpus(db, tenant_id), include_real="train")
        assert response.status_code == 422
        assert "no real data set" in response.json()["detail"]


def store_report(db, corpus_id: str, settings, samples: int = 5, html: str | None = "<html>report</html>") -> None:
    """A computed report as the worker leaves it: the row succeeded, the page on the artifact store."""
    from app.db.models import CorpusReport
    from app.services import reports

    with db.transaction() as s:
        row = reports.of_corpus(s, corpus_id)
        if row is None:
            row = CorpusReport(tenant_id=s.get(Corpus, corpus_id).tenant_id, corpus_id=corpus_id)
            s.add(row)
        row.status, row.samples, row.report = "succeeded", samples, {"headline": {"labels": {}}}
    if html is not None:
        page = reports.directory(settings.resolved_artifact_dir, corpus_id) / reports.HTML_NAME
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(html)


class TestReport:
    def test_none_before_any_was_requested(self, client, auth, corpus_id):
        r = client.get(f"/corpora/{corpus_id}/report", headers=auth)
        assert r.status_code == 404 and "POST /corpora" in r.json()["detail"]

    def test_post_queues_one_computation_after_commit(self, client, auth, corpus_id, queue):
        r = client.post(f"/corpora/{corpus_id}/report", headers=auth)
        assert r.status_code == 202, r.text
        body = r.json()
        assert (body["status"], body["report"], body["corpus_id"]) == ("queued", None, corpus_id)
        assert queue.sent == [("report.run", body["id"])]
        again = client.post(f"/corpora/{corpus_id}/report", headers=auth).json()
        assert again["id"] == body["id"] and queue.sent == [("report.run", body["id"])]  # one in progress is kept
        assert client.get(f"/corpora/{corpus_id}/report", headers=auth).json()["status"] == "queued"

    def test_a_computed_report_is_served_and_can_be_recomputed(self, client, auth, db, corpus_id, settings, queue):
        store_report(db, corpus_id, settings)
        body = client.get(f"/corpora/{corpus_id}/report", headers=auth).json()
        assert (body["status"], body["stale"], body["report"]) == ("succeeded", False, {"headline": {"labels": {}}})
        recomputed = client.post(f"/corpora/{corpus_id}/report", headers=auth).json()
        assert (recomputed["status"], recomputed["report"]) == ("queued", None)
        assert queue.sent == [("report.run", recomputed["id"])]

    def test_stale_once_the_corpus_holds_other_samples(self, client, auth, db, corpus_id, settings):
        store_report(db, corpus_id, settings, samples=4)
        assert client.get(f"/corpora/{corpus_id}/report", headers=auth).json()["stale"] is True

    def test_other_tenant_is_404(self, client, auth, other_auth, db, corpus_id, settings):
        store_report(db, corpus_id, settings)
        assert client.get(f"/corpora/{corpus_id}/report", headers=other_auth).status_code == 404
        assert client.post(f"/corpora/{corpus_id}/report", headers=other_auth).status_code == 404
        assert client.get(f"/corpora/{corpus_id}/report.html", headers=other_auth).status_code == 404


class TestReportPage:
    def test_the_stored_page(self, client, auth, db, corpus_id, settings):
        store_report(db, corpus_id, settings, html="<html><body>evidence</body></html>")
        r = client.get(f"/corpora/{corpus_id}/report.html", headers=auth)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.text == "<html><body>evidence</body></html>"

    def test_409_while_it_is_computed(self, client, auth, corpus_id):
        client.post(f"/corpora/{corpus_id}/report", headers=auth)
        r = client.get(f"/corpora/{corpus_id}/report.html", headers=auth)
        assert r.status_code == 409 and "queued" in r.json()["detail"]

    def test_409_naming_the_remedy_when_the_page_is_gone(self, client, auth, db, corpus_id, settings):
        store_report(db, corpus_id, settings, html=None)
        r = client.get(f"/corpora/{corpus_id}/report.html", headers=auth)
        assert r.status_code == 409 and f"POST /corpora/{corpus_id}/report" in r.json()["detail"]

    def test_404_before_any_was_requested(self, client, auth, corpus_id):
        assert client.get(f"/corpora/{corpus_id}/report.html", headers=auth).status_code == 404
