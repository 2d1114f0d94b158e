"""GET /prompt-sets, POST /prompt-sets, GET /prompt-sets/{id}."""

from __future__ import annotations

import copy

import pytest

from app.domain.prompts import DEFAULT_INSTRUCTION, default_prompt_set
from tests.api.factories import CUSTOM_PROMPT_SET as CUSTOM


def custom_body(**changes) -> dict:
    body = copy.deepcopy(CUSTOM)
    body.update(changes)
    return body


def create_prompt_set(client, auth, body: dict | None = None) -> dict:
    response = client.post("/prompt-sets", headers=auth, json=body or CUSTOM)
    assert response.status_code == 201, response.text
    return response.json()


class TestDefaultPromptSet:
    def test_listed_for_every_tenant(self, client, auth, other_auth):
        for headers in (auth, other_auth):
            page = client.get("/prompt-sets", headers=headers).json()
            assert [p["id"] for p in page["data"]] == ["ps_default"]

    def test_is_the_study_design(self, client, auth):
        response = client.get("/prompt-sets/ps_default", headers=auth)
        assert response.status_code == 200
        spec = response.json()["spec"]
        assert spec == default_prompt_set().to_dict()
        assert spec["instruction"] == DEFAULT_INSTRUCTION
        assert {label: len(p["training_roles"]) for label, p in spec["labels"].items()} == {
            "control": 10, "impaired": 10,
        }


class TestCreatePromptSet:
    def test_created_and_visible_to_its_tenant(self, client, auth):
        created = create_prompt_set(client, auth)
        assert created["id"].startswith("ps_") and created["id"] != "ps_default"
        assert created["name"] == "short roles"
        assert created["spec"] == CUSTOM
        assert client.get(f"/prompt-sets/{created['id']}", headers=auth).json() == created
        listed = [p["id"] for p in client.get("/prompt-sets", headers=auth).json()["data"]]
        assert set(listed) == {"ps_default", created["id"]}

    def test_instruction_defaults_to_the_studys(self, client, auth):
        body = custom_body()
        del body["instruction"]
        assert create_prompt_set(client, auth, body)["spec"]["instruction"] == DEFAULT_INSTRUCTION


class TestCreatePromptSetInvalid:
    @pytest.mark.parametrize(
        ("change", "fragment"),
        [
            ({"instruction": "Transcribe a participant."}, "{wording}"),
            ({"labels": {"control": CUSTOM["labels"]["control"]}}, "missing: impaired"),
            ({"labels": {**CUSTOM["labels"], "impaired": {**CUSTOM["labels"]["impaired"], "training_roles": []}}},
             "training_roles"),
            ({"labels": {**CUSTOM["labels"], "impaired": {**CUSTOM["labels"]["impaired"], "training_roles": ["  "]}}},
             "non-empty training role"),
            ({"labels": {**CUSTOM["labels"], "control": {**CUSTOM["labels"]["control"], "wording": " "}}},
             "wording"),
            ({"name": ""}, "name"),
            ({"labels": {**CUSTOM["labels"], "mci": CUSTOM["labels"]["impaired"]}}, "unknown: mci"),
            ({"instruction": "Transcribe a {wording} {wording:>1000000000}."},
             "instruction's field {wording:>1000000000}"),
            ({"instruction": "Transcribe a {wording!r}."}, "instruction's field {wording!r}"),
            ({"instruction": "Transcribe a {wording} {0}."}, "instruction's field {0}"),
            ({"instruction": "Transcribe a {wording.upper}."}, "instruction's field {wording.upper}"),
            ({"instruction": "{wording} " + "x" * 4000}, "the instruction has 4010 characters; at most 4000"),
            ({"instruction": "{wording}" * 9,
              "labels": {**CUSTOM["labels"], "control": {**CUSTOM["labels"]["control"], "wording": "w" * 1000}}},
             "the instruction rendered for label 'control' has 9000"),
        ],
        ids=["no_wording_placeholder", "missing_label", "empty_roles", "blank_role", "blank_wording", "empty_name",
             "unknown_label", "padding_format_spec", "conversion", "positional_field", "attribute", "long_instruction",
             "long_rendering"],
    )
    def test_refused_with_a_message(self, client, auth, change, fragment):
        response = client.post("/prompt-sets", headers=auth, json=custom_body(**change))
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "InvalidInput"
        assert fragment in response.json()["detail"]
        assert [p["id"] for p in client.get("/prompt-sets", headers=auth).json()["data"]] == ["ps_default"]


class TestTenantIsolation:
    def test_other_tenant_cannot_see_it(self, client, auth, other_auth):
        created = create_prompt_set(client, auth)
        response = client.get(f"/prompt-sets/{created['id']}", headers=other_auth)
        assert response.status_code == 404
        assert response.json()["error"] == "NotFound"
        listed = [p["id"] for p in client.get("/prompt-sets", headers=other_auth).json()["data"]]
        assert listed == ["ps_default"]
