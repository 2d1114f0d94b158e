"""Schemathesis against the service's own OpenAPI document: every operation on SQLite and Postgres,
positive and negative cases, with the tenant's key, another tenant's key, and no valid key; about half
of the cases point at objects that exist. No 5xx, every status declared, every body matching its
schema, invalid input refused, and neither a missing key nor another tenant's key reaches an object.

Bounded and derandomized for CI; ``SYNTHAUG_FUZZ_EXAMPLES`` sets the cases per operation for a longer
session (the database is rolled back after each operation either way).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.settings import Settings
from tests.api.factories import (
    CUSTOM_PROMPT_SET,
    add_checkpoint,
    add_events,
    create_job,
    insert_corpus,
    insert_generation,
    make_text,
    upload_small_dataset,
)
from tests.conftest import TEST_PEPPER

EXAMPLES = int(os.environ.get("SYNTHAUG_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]

# The operations, read once from the document the app serves (it does not depend on the database).
_DOCUMENT = create_app(Settings(env="test", key_pepper=TEST_PEPPER)).openapi()
OPERATIONS = [f"{method.upper()} {path}" for path, methods in _DOCUMENT["paths"].items() for method in methods]
UNAUTHENTICATED = {"GET /healthz", "GET /readyz", "GET /metrics"}


@pytest.fixture
def real_ids(client, auth, db, tenant_id, adapter_id) -> dict[str, str]:
    """One object of every kind, owned by the key's tenant, by the name of the path parameter."""
    dataset = upload_small_dataset(client, auth)
    prompt_set = client.post("/prompt-sets", headers=auth, json=CUSTOM_PROMPT_SET)
    assert prompt_set.status_code == 201, prompt_set.text
    job = create_job(client, auth, dataset["id"])
    assert job.status_code == 201, job.text
    add_events(db, job.json()["id"], 3)
    add_checkpoint(db, job.json()["id"], step=10, epoch=1.0)
    corpus_id = insert_corpus(db, tenant_id, dataset_id=dataset["id"])
    texts = [make_text(i) for i in range(3)]
    generation_id = insert_generation(db, tenant_id, adapter_id, corpus_id, "impaired", texts)
    return {
        "dataset_id": dataset["id"], "prompt_set_id": prompt_set.json()["id"], "job_id": job.json()["id"],
        "adapter_id": adapter_id, "corpus_id": corpus_id, "generation_id": generation_id,
    }


def with_real_ids(case: schemathesis.Case, ids: dict[str, str]) -> bool:
    """Point the case's path parameters and body references at existing objects; False if it has none."""
    replaced = False
    for name in (case.path_parameters or {}).keys() & ids.keys():
        case.path_parameters[name] = ids[name]
        replaced = True
    if isinstance(case.body, dict):
        for name in case.body.keys() & ids.keys():
            case.body[name] = ids[name]
            replaced = True
    return replaced


def run(operation, examples: int, call) -> None:
    """``call(case, data)`` on ``examples`` positive and negative cases of ``operation``, the same ones every run."""
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    @hypothesis_settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
    @given(case=cases, data=st.data())
    def fuzz(case, data):
        call(case, data)

    fuzz()


def operation_of(client, label: str):
    method, path = label.split(" ", 1)
    return schemathesis.openapi.from_asgi("/openapi.json", client.app)[path][method]


def bearer(key_headers: dict[str, str]) -> dict[str, str]:
    """The key of ``key_headers`` as a bearer token, which wins over any generated X-API-Key."""
    (key,) = key_headers.values()
    return {"Authorization": key if key.startswith("Bearer ") else f"Bearer {key}"}


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation(label, client, auth, other_auth, real_ids):
    keys = {"own": bearer(auth), "another tenant's": bearer(other_auth), "none valid": {}}

    def call(case, data) -> None:
        replaced = data.draw(st.booleans(), label="existing objects") and with_real_ids(case, real_ids)
        key = data.draw(st.sampled_from(list(keys)), label="key")
        # "none valid" sends only what was generated: no key, or random Authorization / X-API-Key values.
        response = case.call_and_validate(headers=keys[key], checks=CHECKS)
        if key == "none valid" and label not in UNAUTHENTICATED:
            # A malformed parameter may be refused before the key is looked at; nothing else may answer.
            assert response.status_code in (401, 422), (response.status_code, response.text)
        if key == "another tenant's" and replaced:
            assert response.status_code >= 400, f"another tenant's key reached {case.formatted_path}: {response.text}"

    run(operation_of(client, label), EXAMPLES, call)


class TestFrameworkErrors:
    """Refusals the framework makes before a route runs, as the fuzzer first met them."""

    def test_a_body_that_is_not_utf8_is_a_400_saying_so(self, client, auth):
        response = client.post("/prompt-sets", headers={**auth, "Content-Type": "application/json"}, content=b"\xff{")
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "BadRequest"
        assert "utf-8" in body["detail"]

    def test_an_unknown_path_answers_in_the_error_shape(self, client, auth):
        response = client.get("/no-such-thing", headers=auth)
        assert response.status_code == 404
        assert response.json() == {"error": "NotFound", "detail": "Not Found"}


class TestIntegerKeys:
    """Found by the fuzzer: ids of events, checkpoints, samples and records are 32-bit on Postgres."""

    @pytest.mark.parametrize("value", [2**31 - 1, 2**31, 2**63 - 1])
    @pytest.mark.parametrize("path", [
        "/finetune-jobs/{job_id}/events?after={value}", "/finetune-jobs/{job_id}/checkpoints?cursor={value}",
        "/corpora/{corpus_id}/samples?cursor={value}", "/datasets/{dataset_id}/records?cursor={value}",
    ])
    def test_a_cursor_past_every_id_is_an_empty_page_or_a_422(self, client, auth, real_ids, path, value):
        response = client.get(path.format(value=value, **real_ids), headers=auth)
        if response.status_code == 200:
            assert response.json()["data"] == []
        else:
            assert response.status_code == 422
            assert "after" in response.text or "cursor" in response.text
