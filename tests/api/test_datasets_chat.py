"""POST /datasets with CHAT transcripts: one .cha file or a zip of them, the CHAT form fields, the refusals."""

from __future__ import annotations

import io
import json
import random
import zipfile

import pytest

from tests.api.factories import upload
from tests.api.test_datasets import all_records, assert_nothing_stored
from tests.unit.test_ingestion_archives import FIXTURES, adress_entries, cha

DEFAULT_CHAT_OPTIONS = {
    "style": "verbatim", "speaker": "PAR", "keep_fragments": True, "pauses": "ellipsis", "unintelligible": "marker",
    "mmse_slot": "education", "label_map": {"cc": "control", "cd": "impaired", "Control": "control",
                                            "Dementia": "impaired"},
    "participant_pattern": r"^(.+?)(?:-\d+)?(?:\.\w+)?$",
}


def zip_bytes(entries: dict[str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def adress_zip(**extra: str | bytes) -> bytes:
    """The ADReSS layout, with the two illustrative fixture transcripts as S007 (control) and S008 (impaired)."""
    return zip_bytes(adress_entries() | {
        "train/cc/S007.cha": (FIXTURES / "adress_control.cha").read_bytes(),
        "train/cd/S008.cha": (FIXTURES / "pitt_probable_ad.cha").read_bytes(),
    } | extra)


def refused(response, code: str) -> dict:
    """The one error of ``code`` in a 422's report."""
    assert response.status_code == 422, response.text
    payload = response.json()
    assert payload["error"] == "DatasetInvalid"
    [issue] = [issue for issue in payload["report"]["errors"] if issue["code"] == code]
    return issue


class TestUploadZip:
    def test_adress_zip_is_stored_with_files_as_rows(self, client, auth):
        response = upload(client, auth, adress_zip(), "adress.zip")
        assert response.status_code == 201, response.text
        dataset = response.json()
        assert dataset["record_count"] == 8
        assert dataset["column_mapping"] == {"chat": DEFAULT_CHAT_OPTIONS}
        stats = dataset["report"]["stats"]
        assert (stats["format"], stats["split_assigned"]) == ("zip", False)
        assert stats["label_sources"] == {"folder": 6, "metadata": 2, "@ID": 0}
        records = all_records(client, auth, dataset["id"])
        assert [(r["row"], r["participant_id"], r["label"], r["split"]) for r in records] == [
            (1, "S005", "control", "test"), (2, "S006", "impaired", "test"),
            (3, "S001", "control", "train"), (4, "S003", "control", "train"), (5, "S007", "control", "train"),
            (6, "S002", "impaired", "train"), (7, "S004", "impaired", "train"), (8, "S008", "impaired", "train"),
        ]

    def test_verbatim_keeps_what_was_said(self, client, auth):
        dataset = upload(client, auth, adress_zip(), "adress.zip").json()
        texts = {r["participant_id"]: r["text"] for r in all_records(client, auth, dataset["id"])}
        assert texts["S008"].startswith("uh the boy is is st standing on a ... stool.")
        assert "uh" in texts["S007"].split() and "um" in texts["S007"].split()
        assert "Investigator" not in texts["S008"] and "everything you see" not in texts["S008"]

    def test_clean_drops_disfluencies(self, client, auth):
        response = upload(client, auth, adress_zip(), "adress.zip", style="clean")
        assert response.status_code == 201, response.text
        assert response.json()["column_mapping"]["chat"]["style"] == "clean"
        texts = {r["participant_id"]: r["text"] for r in all_records(client, auth, response.json()["id"])}
        assert texts["S008"].startswith("the boy is standing on a stool.")
        assert not any({"uh", "um", "..."} & set(text.split()) for text in texts.values())

    def test_verbatim_options(self, client, auth):
        response = upload(client, auth, adress_zip(), "adress.zip", pauses="drop", keep_fragments="false",
                          unintelligible="drop")
        assert response.status_code == 201, response.text
        texts = {r["participant_id"]: r["text"] for r in all_records(client, auth, response.json()["id"])}
        assert texts["S008"].startswith("uh the boy is is standing on a stool.")
        assert "xxx" not in texts["S008"] and "..." not in texts["S008"]

    def test_pitt_zip_with_a_label_map_and_a_pattern(self, client, auth):
        entries = {f"HC/visit{v}_P{p}.cha": cha(2 * p + v) for p in range(3) for v in range(2)}
        entries |= {f"AD/visit0_P{p}.cha": cha(p + 10) for p in range(3, 6)}
        response = upload(client, auth, zip_bytes(entries), "pitt.zip", label_map=json.dumps({"HC": "control",
                          "AD": "impaired"}), participant_pattern=r"_(P\d+)\.cha$", split_seed=3)
        assert response.status_code == 201, response.text
        records = all_records(client, auth, response.json()["id"])
        assert sorted({r["participant_id"] for r in records}) == [f"P{p}" for p in range(6)]
        assert all(len({r["split"] for r in records if r["participant_id"] == f"P{p}"}) == 1 for p in range(3))


class TestUploadChatFile:
    def test_one_file_alone_is_refused_for_lack_of_the_other_label(self, client, auth):
        data = (FIXTURES / "pitt_probable_ad.cha").read_bytes()
        issue = refused(upload(client, auth, data, "001-0.cha"), "missing_label")
        assert "'control'" in issue["message"]
        assert_nothing_stored(client, auth)

    def test_content_is_recognised_without_the_suffix(self, client, auth):
        data = (FIXTURES / "malformed.cha").read_bytes()
        response = upload(client, auth, data, "transcript.txt")
        assert response.json()["report"]["stats"]["format"] == "chat"
        assert refused(response, "chat_no_end")["file"] == "transcript.txt"


class TestRefusals:
    def test_a_malformed_transcript_is_named_with_its_line_and_nothing_stored(self, client, auth):
        data = adress_zip(**{"train/cd/S009.cha": (FIXTURES / "malformed.cha").read_bytes()})
        issue = refused(upload(client, auth, data, "adress.zip"), "chat_unreadable_line")
        assert (issue["file"], issue["row"]) == ("train/cd/S009.cha", 10)
        assert issue["message"].startswith("train/cd/S009.cha: line 10: ")
        assert_nothing_stored(client, auth)

    @pytest.mark.parametrize(("entry", "code"), [
        ("../S009.cha", "unsafe_path"), ("/tmp/S009.cha", "unsafe_path"), ("train/cc/more.zip", "nested_archive"),
    ])
    def test_unsafe_entries(self, client, auth, entry, code):
        response = upload(client, auth, adress_zip(**{entry: cha(9)}), "adress.zip")
        assert refused(response, code)["file"] == entry
        assert entry in response.json()["detail"]
        assert_nothing_stored(client, auth)

    @pytest.mark.parametrize("filename", ["big.zip", "big.cha"])
    def test_over_the_upload_limit_is_413(self, client, auth, settings, filename):
        noise = random.Random(0).randbytes(settings.max_upload_bytes + 10)
        data = zip_bytes({"train/cc/noise.bin": noise}) if filename.endswith(".zip") else b"@UTF8\n" + noise
        response = upload(client, auth, data, filename)
        assert response.status_code == 413, response.text
        payload = response.json()
        assert payload["error"] == "UploadTooLarge"
        assert [e["code"] for e in payload["report"]["errors"]] == ["file_too_large"]
        assert f"{settings.max_upload_bytes:,}" in payload["detail"]
        assert_nothing_stored(client, auth)


class TestArchiveLimitsFromSettings:
    @pytest.fixture
    def settings(self, settings):
        return settings.model_copy(update={"max_archive_files": 5, "max_archive_bytes": 1_000_000})

    def test_too_many_files(self, client, auth):
        issue = refused(upload(client, auth, adress_zip(), "adress.zip"), "too_many_files")
        assert "over the limit of 5" in issue["message"] and issue["file"]
        assert_nothing_stored(client, auth)


class TestChatFormFields:
    @pytest.mark.parametrize(("form", "fragment"), [
        ({"style": "fancy"}, "style"),
        ({"pauses": "keep"}, "pauses"),
        ({"speaker": "PAR INV"}, "speaker"),
        ({"label_map": "{not json"}, "not valid JSON"),
        ({"label_map": '["cc"]'}, "must be a JSON object"),
        ({"label_map": '{"cc": "healthy"}'}, "healthy"),
        ({"participant_pattern": r"\d+"}, "exactly one group"),
        ({"participant_pattern": "(unclosed"}, "not a regular expression"),
    ], ids=["style", "pauses", "speaker", "label_map_json", "label_map_list", "label_map_label", "pattern_groups",
            "pattern_syntax"])
    def test_refused_with_a_message(self, client, auth, form, fragment):
        response = upload(client, auth, adress_zip(), "adress.zip", **form)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert fragment in response.json()["detail"]
        assert_nothing_stored(client, auth)

    def test_documented_in_openapi(self, client):
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        form = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["properties"]
        for field in ("style", "speaker", "keep_fragments", "pauses", "unintelligible", "label_map",
                      "participant_pattern"):
            assert form[field].get("description"), field
        assert "label_map" in schema["paths"]["/datasets"]["post"]["description"]
