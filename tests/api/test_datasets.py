"""POST /datasets, GET /datasets, GET /datasets/{id}, GET /datasets/{id}/records."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.db.models import Dataset, Record
from tests.api.factories import (
    balanced_rows,
    csv_bytes,
    jsonl_bytes,
    make_text,
    upload,
    upload_example_dataset,
    upload_small_dataset,
)

SPLIT_HEADER = ("id", "text", "label", "split")


def all_records(client, auth, dataset_id, **params) -> list[dict]:
    response = client.get(f"/datasets/{dataset_id}/records", headers=auth, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def assert_nothing_stored(client, auth) -> None:
    """No dataset through the API, and no dataset or record row in the database at all."""
    response = client.get("/datasets", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}
    with client.app.state.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
        assert session.scalar(select(func.count()).select_from(Record)) == 0


class TestUploadCsv:
    def test_example_file_is_stored_with_its_report(self, client, auth):
        dataset = upload_example_dataset(client, auth)
        assert dataset["id"].startswith("ds_")
        assert dataset["name"] == dataset["filename"] == "adress_illustrative.csv"
        assert dataset["record_count"] == 120
        report = dataset["report"]
        assert report["ok"] is True and report["errors"] == []
        assert report["stats"]["format"] == "csv"
        assert report["stats"]["labels"] == {"control": 60, "impaired": 60}
        assert report["stats"]["split_assigned"] is True
        assert sum(report["stats"]["splits"].values()) == 120
        assert dataset["column_mapping"] == {
            "participant": "id", "text": "text", "label": "label", "split": "split",
            "label_values": {"0": "control", "1": "impaired"},
        }
        assert client.get(f"/datasets/{dataset['id']}", headers=auth).json() == dataset

    def test_records_keep_file_rows_and_canonical_labels(self, client, auth):
        dataset = upload_small_dataset(client, auth, name="pilot")
        assert dataset["name"] == "pilot"
        records = all_records(client, auth, dataset["id"])
        assert len(records) == dataset["record_count"] == 6
        assert [r["row"] for r in records] == list(range(2, 8))
        assert [(r["row"], r["participant_id"], r["label"]) for r in records[:2]] == [
            (2, "S000", "control"), (3, "S001", "impaired"),
        ]
        assert records[0]["text"] == make_text(0)


class TestUploadJsonl:
    def test_jsonl_with_splits(self, client, auth):
        objects = [
            {"id": f"P{i}", "text": make_text(i), "label": i % 2, "split": ["train", "train", "test"][i // 2 % 3]}
            for i in range(6)
        ]
        response = upload(client, auth, jsonl_bytes(objects), "upload.jsonl")
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["report"]["stats"]["format"] == "jsonl"
        assert dataset["record_count"] == 6
        records = all_records(client, auth, dataset["id"])
        assert [(r["row"], r["participant_id"], r["split"]) for r in records] == [
            (i + 1, f"P{i}", o["split"]) for i, o in enumerate(objects)
        ]


class TestColumnMapping:
    def test_custom_columns_and_label_values(self, client, auth):
        rows = [[f"adrso{i:03d}", make_text(i), ["Control", "ProbableAD"][i % 2]] for i in range(6)]
        data = csv_bytes(rows, header=("participant", "transcript", "diagnosis"))
        response = upload(
            client, auth, data, "adress.csv",
            participant_column="participant", text_column="transcript", label_column="diagnosis",
            label_values=json.dumps({"Control": "control", "ProbableAD": "impaired"}),
        )
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["column_mapping"] == {
            "participant": "participant", "text": "transcript", "label": "diagnosis", "split": "split",
            "label_values": {"Control": "control", "ProbableAD": "impaired"},
        }
        records = all_records(client, auth, dataset["id"])
        assert {r["participant_id"]: r["label"] for r in records} == {
            f"adrso{i:03d}": ["control", "impaired"][i % 2] for i in range(6)
        }

    def test_default_mapping_refuses_unmapped_label_values(self, client, auth):
        rows = [["a", make_text(0), "Control"], ["b", make_text(1), "ProbableAD"]]
        response = upload(client, auth, csv_bytes(rows))
        assert response.status_code == 422
        assert {e["code"] for e in response.json()["report"]["errors"]} >= {"unknown_label"}


class TestSplits:
    def test_given_split_column_is_kept(self, client, auth):
        data = csv_bytes(balanced_rows(6, splits=["train", "train", "val", "dev", "test", "train"]), SPLIT_HEADER)
        dataset = upload(client, auth, data).json()
        assert dataset["report"]["stats"]["split_assigned"] is False
        records = all_records(client, auth, dataset["id"])
        expected = ["train", "train", "validation", "validation", "test", "train"]
        assert [r["split"] for r in records] == [expected[i % 6] for i in range(12)]

    def test_assigned_splits_keep_each_participant_in_one_split(self, client, auth):
        # Two texts per participant: assignment must be by participant, not by row.
        rows = [[f"S{i // 2:03d}", make_text(i), (i // 2) % 2] for i in range(40)]
        dataset = upload(client, auth, csv_bytes(rows), split_seed=7).json()
        assert dataset["split_seed"] == 7
        stats = dataset["report"]["stats"]
        assert stats["split_assigned"] is True
        records = all_records(client, auth, dataset["id"])
        split_of: dict[str, set[str]] = {}
        for record in records:
            split_of.setdefault(record["participant_id"], set()).add(record["split"])
        assert all(len(splits) == 1 for splits in split_of.values())
        for label in ("control", "impaired"):
            assert all(stats["label_splits"][label][split] > 0 for split in ("train", "validation", "test"))

    def test_assignment_is_reproducible_from_the_seed(self, client, auth):
        data = csv_bytes(balanced_rows(10))
        first = all_records(client, auth, upload(client, auth, data, split_seed=3).json()["id"])
        second = all_records(client, auth, upload(client, auth, data, split_seed=3).json()["id"])
        assert [r["split"] for r in first] == [r["split"] for r in second]


# (case, filename, body, form, code, where) — where: the fields the report must name.
INVALID_UPLOADS = [
    ("unsupported_format", "notes.txt", b"id,text,label\n", {}, "unsupported_format", {}),
    ("not_utf8", "u.csv", "id,text,label\nS1,caf\u00e9 au lait,0\n".encode("latin-1"), {}, "undecodable", {"row": 2}),
    ("empty_file", "e.csv", b"", {}, "no_records", {}),
    ("header_only", "h.csv", b"id,text,label\n", {}, "no_records", {}),
    ("missing_column", "m.csv", csv_bytes([["S1", 0]], ("id", "label")), {}, "missing_column", {"column": "text"}),
    ("empty_text", "t.csv", csv_bytes([["S1", make_text(1), 0], ["S2", " ", 1]]), {}, "empty_text",
     {"row": 3, "column": "text", "participant": "S2"}),
    ("missing_participant", "p.csv", csv_bytes([["", make_text(1), 0]]), {}, "missing_participant",
     {"row": 2, "column": "id"}),
    ("unknown_label", "l.csv", csv_bytes([["S1", make_text(1), 0], ["S2", make_text(2), 2]]), {}, "unknown_label",
     {"row": 3, "column": "label", "participant": "S2"}),
    ("unknown_split", "s.csv", csv_bytes([["S1", make_text(1), 0, "holdout"]], SPLIT_HEADER), {}, "unknown_split",
     {"row": 2, "column": "split", "participant": "S1"}),
    ("label_conflict", "c.csv", csv_bytes([["S1", make_text(1), 0], ["S2", make_text(2), 1], ["S1", make_text(3), 1]]),
     {}, "label_conflict", {"row": 4, "participant": "S1"}),
    ("participant_in_two_splits", "x.csv",
     csv_bytes([["S1", make_text(1), 0, "train"], ["S2", make_text(2), 1, "train"], ["S1", make_text(3), 0, "test"]],
               SPLIT_HEADER), {}, "participant_in_two_splits", {"row": 4, "participant": "S1"}),
    ("missing_label", "o.csv", csv_bytes([["S1", make_text(1), 0, "train"], ["S2", make_text(2), 1, "test"]],
                                         SPLIT_HEADER), {}, "missing_label", {}),
    ("invalid_json", "j.jsonl", b'{"id": "S1", "text": "t", "label": 0}\n{"id": "S2", "text": \n', {}, "invalid_json",
     {"row": 2}),
    ("json_not_object", "a.jsonl", b'[1, 2]\n', {}, "invalid_json", {"row": 1}),
    ("participant_too_long", "pl.csv", csv_bytes([["p" * 201, make_text(1), 0]]), {}, "participant_too_long",
     {"row": 2, "column": "id", "participant": "p" * 201}),
    ("custom_column_missing", "cm.csv", csv_bytes(balanced_rows(2)), {"text_column": "transcript"}, "missing_column",
     {"column": "transcript"}),
]


class TestUploadErrors:
    @pytest.mark.parametrize(
        ("filename", "body", "form", "code", "where"),
        [case[1:] for case in INVALID_UPLOADS],
        ids=[case[0] for case in INVALID_UPLOADS],
    )
    def test_refused_with_a_located_report_and_nothing_stored(self, client, auth, filename, body, form, code, where):
        response = upload(client, auth, body, filename, **form)
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["error"] == "DatasetInvalid"
        assert payload["report"]["ok"] is False
        issues = [issue for issue in payload["report"]["errors"] if issue["code"] == code]
        assert issues, payload["report"]["errors"]
        assert "error(s)" in payload["detail"]
        for field, value in where.items():
            assert issues[0][field] == value, issues[0]
        assert_nothing_stored(client, auth)

    def test_detail_counts_errors_and_quotes_the_first(self, client, auth):
        rows = [["S1", "", 0], ["S2", make_text(2), 9], ["S3", make_text(3), 1], ["S4", make_text(4), 0]]
        payload = upload(client, auth, csv_bytes(rows)).json()
        errors = payload["report"]["errors"]
        assert len(errors) == 2
        assert payload["detail"].startswith("the upload has 2 error(s); first: ")
        assert errors[0]["message"] in payload["detail"]
        assert (payload["report"]["errors_total"], payload["report"]["errors_truncated"]) == (2, False)
        assert_nothing_stored(client, auth)

    def test_warnings_do_not_block(self, client, auth):
        rows = [["S1", "too short", 0], ["S2", "too short too", 1]]
        response = upload(client, auth, csv_bytes(rows))
        assert response.status_code == 201, response.text
        assert {w["code"] for w in response.json()["report"]["warnings"]} == {"short_text", "token_stats_unavailable"}


def leak_rows(*extra: list) -> list[list]:
    """Six distinct train rows (S000..S005), then ``extra``."""
    return balanced_rows(3, splits=["train"]) + list(extra)


def as_upload(rows: list[list], fmt: str) -> tuple[str, bytes]:
    if fmt == "csv":
        return "leak.csv", csv_bytes(rows, SPLIT_HEADER)
    return "leak.jsonl", jsonl_bytes([dict(zip(SPLIT_HEADER, row)) for row in rows])


FULL_WIDTH_P01 = "\uff30\uff10\uff11"
# (case, rows, code, participant of the flagged row, message fragments naming both rows). The rows under
# test follow six train rows: {0} and {1} are their lines (CSV lines 8, 9; JSONL lines 7, 8); the second
# is the flagged one.
LEAKS = [
    ("participant_lower_case_in_test",
     leak_rows(["P01", make_text(40), 0, "train"], [" p01", make_text(41), 0, "test"]),
     "participant_in_two_splits", "p01",
     ["participant P01 is in 'train' on line {0} and in 'test' on line {1}", "written 'p01' there"]),
    ("participant_full_width_in_validation",
     leak_rows(["P01", make_text(40), 0, "train"], [FULL_WIDTH_P01, make_text(41), 0, "validation"]),
     "participant_in_two_splits", FULL_WIDTH_P01,
     ["participant P01 is in 'train' on line {0} and in 'validation' on line {1}",
      f"written '{FULL_WIDTH_P01}' there"]),
    ("participant_spellings_with_two_labels",
     leak_rows(["P01", make_text(40), 0, "train"], ["p01 ", make_text(41), 1, "train"]),
     "label_conflict", "p01",
     ["participant P01 is labelled 'control' on line {0} and 'impaired' on line {1}", "written 'p01' there"]),
    ("same_transcript_in_test",
     leak_rows(["T00", make_text(40), 0, "train"], ["T01", make_text(40).upper() + "  ", 0, "test"]),
     "text_in_two_splits", "T01", ["line {0} (participant T00, 'train') and line {1} (participant T01, 'test')"]),
]


class TestLeakageRefused:
    @pytest.mark.parametrize("fmt", ["csv", "jsonl"])
    @pytest.mark.parametrize(
        ("rows", "code", "participant", "fragments"), [case[1:] for case in LEAKS], ids=[case[0] for case in LEAKS]
    )
    def test_refused_with_both_rows_named_and_nothing_stored(
        self, client, auth, fmt, rows, code, participant, fragments
    ):
        filename, body = as_upload(rows, fmt)
        response = upload(client, auth, body, filename)
        assert response.status_code == 422, response.text
        payload = response.json()
        assert payload["error"] == "DatasetInvalid"
        issues = [issue for issue in payload["report"]["errors"] if issue["code"] == code]
        assert len(issues) == 1, payload["report"]["errors"]
        lines = (8, 9) if fmt == "csv" else (7, 8)
        assert (issues[0]["row"], issues[0]["participant"]) == (lines[1], participant)
        for fragment in fragments:
            assert fragment.format(*lines) in issues[0]["message"], issues[0]["message"]
        assert_nothing_stored(client, auth)


class TestLeakageAllowed:
    def test_ids_are_stored_as_written_and_spellings_share_a_split(self, client, auth):
        rows = [[f"S{i:02d}", make_text(i), i % 2] for i in range(20)]
        rows += [["P01", make_text(40), 0], ["\uff50\uff10\uff11", make_text(41), 0], [" p01", make_text(42), 0]]
        response = upload(client, auth, csv_bytes(rows), split_seed=5)
        assert response.status_code == 201, response.text
        report = response.json()["report"]
        assert report["stats"]["participants"] == 21
        assert {w["code"] for w in report["warnings"]} >= {"participant_spelling"}
        records = all_records(client, auth, response.json()["id"])
        spellings = [r for r in records if r["row"] >= 22]
        assert [r["participant_id"] for r in spellings] == ["P01", "\uff50\uff10\uff11", "p01"]
        assert len({r["split"] for r in spellings}) == 1

    @pytest.mark.parametrize("fmt", ["csv", "jsonl"])
    def test_a_short_phrase_in_two_splits_is_a_warning(self, client, auth, fmt):
        rows = leak_rows(["T01", "I don't know.", 0, "test"], ["T02", "i don't KNOW", 1, "train"])
        filename, body = as_upload(rows, fmt)
        response = upload(client, auth, body, filename)
        assert response.status_code == 201, response.text
        duplicates = [w for w in response.json()["report"]["warnings"] if w["code"] == "duplicate_text"]
        assert len(duplicates) == 1
        assert "participants T01, T02" in duplicates[0]["message"]
        assert "splits 'test', 'train'" in duplicates[0]["message"]


class TestTokenStats:
    def test_token_lengths_under_the_base_models_tokenizer_once_prepared(self, client, auth, settings, cache_dir):
        from worker.models import materialize_base_model

        prepared = materialize_base_model("smollm2-135m-instruct", cache_dir)
        target = settings.resolved_cache_dir / "models" / "smollm2-135m-instruct"
        target.mkdir(parents=True)
        (target / "tokenizer.json").write_bytes((prepared / "tokenizer.json").read_bytes())
        response = upload(client, auth, csv_bytes([["S1", "the boy is on the stool", 0], ["S2", "uh the the jar", 1]]))
        assert response.status_code == 201, response.text
        tokens = response.json()["report"]["stats"]["tokens"]
        assert 3 <= tokens["min"] <= tokens["max"] <= 12
        assert "token_stats_unavailable" not in {w["code"] for w in response.json()["report"]["warnings"]}

    def test_unknown_base_model_is_422(self, client, auth):
        response = upload(client, auth, csv_bytes([["S1", "the boy is on the stool", 0]]), base_model="no-such-model")
        assert response.status_code == 422
        assert "no-such-model" in response.json()["detail"]
        assert_nothing_stored(client, auth)

    @pytest.mark.parametrize("fmt", ["csv", "jsonl"])
    def test_a_table_one_byte_over_the_limit_is_413_with_report(self, client, auth, settings, fmt):
        rows = balanced_rows(2)
        data = csv_bytes(rows) if fmt == "csv" else jsonl_bytes([dict(zip(("id", "text", "label"), r)) for r in rows])
        data += b"\n" * (settings.max_upload_bytes + 1 - len(data))  # blank lines: valid but for the size
        response = upload(client, auth, data, f"big.{fmt}")
        assert response.status_code == 413, response.text
        payload = response.json()
        assert payload["error"] == "UploadTooLarge"
        assert [e["code"] for e in payload["report"]["errors"]] == ["file_too_large"]
        assert f"{settings.max_upload_bytes:,}" in payload["detail"]
        assert_nothing_stored(client, auth)

    def test_a_table_exactly_at_the_limit_is_read(self, client, auth, settings):
        data = csv_bytes(balanced_rows(3, splits=["train"]), SPLIT_HEADER)
        data += b"\n" * (settings.max_upload_bytes - len(data))
        response = upload(client, auth, data)
        assert response.status_code == 201, response.text
        assert response.json()["record_count"] == 6

    def test_missing_file_part_is_422(self, client, auth):
        response = client.post("/datasets", headers=auth, data={"name": "x"})
        assert response.status_code == 422
        assert response.json()["error"] == "InvalidInput"
        assert "file" in response.json()["detail"]


class TestFormLimits:
    def test_long_file_name_gives_a_shortened_default_name(self, client, auth):
        filename = "f" * 250 + ".csv"
        response = upload(client, auth, csv_bytes(balanced_rows(2)), filename)
        assert response.status_code == 201, response.text
        assert (response.json()["filename"], response.json()["name"]) == (filename, filename[:200])

    @pytest.mark.parametrize(
        ("filename", "form", "fragment"),
        [
            ("f" * 300 + ".csv", {}, "file name has 304 characters"),
            ("d.csv", {"name": "n" * 201}, "name"),
            ("d.csv", {"split_seed": 2**31}, "split_seed"),
            ("d.csv", {"split_seed": -1}, "split_seed"),
        ],
        ids=["file_name", "name", "split_seed_too_large", "split_seed_negative"],
    )
    def test_refused_with_a_message(self, client, auth, filename, form, fragment):
        response = upload(client, auth, csv_bytes(balanced_rows(2)), filename, **form)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert fragment in response.json()["detail"]
        assert_nothing_stored(client, auth)


class TestLabelValuesField:
    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            ("{not json", "not valid JSON"),
            ('["control", "impaired"]', "must be a JSON object"),
            ('{"Control": 0}', "must be a JSON object"),
            ('{"Control": "healthy"}', "healthy"),
        ],
        ids=["not_json", "a_list", "non_string_value", "unknown_canonical_label"],
    )
    def test_refused_with_a_message(self, client, auth, raw, fragment):
        response = upload(client, auth, csv_bytes(balanced_rows(2)), label_values=raw)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert fragment in response.json()["detail"]
        assert_nothing_stored(client, auth)


class TestListDatasets:
    def test_newest_first_with_cursor(self, client, auth):
        ids = [upload_small_dataset(client, auth, name=f"d{i}")["id"] for i in range(3)]
        first = client.get("/datasets", headers=auth, params={"limit": 2}).json()
        assert [d["id"] for d in first["data"]] == [ids[2], ids[1]]
        assert first["next_cursor"]
        second = client.get("/datasets", headers=auth, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [d["id"] for d in second["data"]] == [ids[0]]
        assert second["next_cursor"] is None

    @pytest.mark.parametrize("limit", [0, 501])
    def test_limit_out_of_range_is_422(self, client, auth, limit):
        response = client.get("/datasets", headers=auth, params={"limit": limit})
        assert response.status_code == 422
        assert "limit" in response.json()["detail"]


class TestRecords:
    def test_filter_by_split_and_label(self, client, auth):
        data = csv_bytes(balanced_rows(6, splits=["train", "train", "test"]), SPLIT_HEADER)
        dataset_id = upload(client, auth, data).json()["id"]
        test_records = all_records(client, auth, dataset_id, split="test")
        assert len(test_records) == 4 and {r["split"] for r in test_records} == {"test"}
        impaired = all_records(client, auth, dataset_id, label="impaired")
        assert len(impaired) == 6 and {r["label"] for r in impaired} == {"impaired"}
        both = all_records(client, auth, dataset_id, split="train", label="control")
        assert {(r["split"], r["label"]) for r in both} == {("train", "control")}
        assert len(both) == 4
        assert all_records(client, auth, dataset_id, split="validation") == []

    def test_pages_cover_every_record_once_in_file_order(self, client, auth):
        dataset = upload_example_dataset(client, auth)
        rows, cursor = [], None
        while True:
            params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            page = client.get(f"/datasets/{dataset['id']}/records", headers=auth, params=params).json()
            rows += [r["row"] for r in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert rows == list(range(2, 122))

    def test_malformed_cursor_is_422(self, client, auth):
        dataset_id = upload_small_dataset(client, auth)["id"]
        response = client.get(f"/datasets/{dataset_id}/records", headers=auth, params={"cursor": "abc"})
        assert response.status_code == 422
        assert "cursor" in response.json()["detail"]


class TestTenantIsolation:
    def test_other_tenant_gets_404_and_an_empty_list(self, client, auth, other_auth):
        dataset_id = upload_small_dataset(client, auth)["id"]
        for path in (f"/datasets/{dataset_id}", f"/datasets/{dataset_id}/records"):
            response = client.get(path, headers=other_auth)
            assert response.status_code == 404
            assert response.json() == {"error": "NotFound", "detail": f"dataset '{dataset_id}' not found"}
        assert client.get("/datasets", headers=other_auth).json() == {"data": [], "next_cursor": None}

    def test_unknown_id_is_404(self, client, auth):
        assert client.get("/datasets/ds_missing", headers=auth).status_code == 404
