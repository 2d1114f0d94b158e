"""No secret reaches a log: an OpenAI fine-tune and a generation from it, a vLLM sampler that cannot
reach its server, good and bad API keys, with every logger at DEBUG in both log formats."""

from __future__ import annotations

import io
import logging
import socket
import time
from typing import Iterator

import pytest
from pydantic import SecretStr

from app.domain.sampling import SamplingParams
from app.logs import configure_logging
from app.settings import Settings
from tests.api.factories import balanced_rows, csv_bytes
from tests.conftest import embedded_stack
from tests.fakes.openai_api import running_fake_openai
from worker.sampling import build_sampler
from worker.sampling.base import SampleRequest, SamplerError, SampleTarget

PEPPER = "pepper-of-the-log-test-7f3a9c"
VLLM_KEY = "vllm-key-of-the-log-test-2b8e41"
OPENAI_KEY = "sk-openai-key-of-the-log-test-5d0c6e"
KEEP_ALL = {"keep_truncated": True, "min_words": 0, "degenerate": False, "memorization_ngram": None, "dedupe": False,
            "label_consistency": False}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every record at DEBUG as JSON lines (the format operators ship), the root restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="DEBUG"), stream=stream)
    yield stream
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_no_secret_in_any_log(tmp_path, cache_dir, json_log, caplog):
    caplog.set_level(logging.DEBUG)
    with running_fake_openai(steps=2, api_key=OPENAI_KEY) as fake:
        settings = Settings(env="test", key_pepper=PEPPER, data_dir=tmp_path, cache_dir=cache_dir,
                            report_on_generation=False, openai_api_key=OPENAI_KEY, openai_base_url=fake.base_url,
                            openai_poll_min_s=0.02, openai_poll_max_s=0.1, vllm_base_url=f"http://127.0.0.1:{closed_port()}/v1",
                            vllm_api_key=VLLM_KEY, vllm_max_retries=0, log_level="DEBUG")
        with embedded_stack(settings, "log-tenant") as stack:
            api_key = stack.headers["Authorization"].removeprefix("Bearer ")
            rows = balanced_rows(15, splits=["train", "train", "train", "train", "validation"])
            r = stack.client.post("/datasets", headers=stack.headers,
                                  files={"file": ("logs.csv", csv_bytes(rows, header=("id", "text", "label", "split")))})
            assert r.status_code == 201, r.text
            r = stack.client.post("/finetune-jobs", headers=stack.headers,
                                  json={"dataset_id": r.json()["id"], "method": "openai", "hyperparameters": {"n_epochs": 1}})
            assert r.status_code == 201, r.text
            assert stack.runner.join(timeout=120)
            job = stack.client.get(f"/finetune-jobs/{r.json()['id']}", headers=stack.headers).json()
            assert job["status"] == "succeeded", job["error"]
            r = stack.client.post("/generate", headers=stack.headers, json={
                "adapter_id": job["adapter_id"], "label": "impaired", "n": 2, "max_tokens": 40, "filters": KEEP_ALL})
            assert r.status_code == 202, r.text
            assert stack.runner.join(timeout=120)
            assert stack.client.get(f"/generations/{r.json()['id']}", headers=stack.headers).json()["status"] == "succeeded"
            wrong = stack.client.get("/datasets", headers={"Authorization": f"Bearer {api_key[:-4]}xxxx"})
            assert wrong.status_code == 401
            sampler = build_sampler("vllm", settings)
            with pytest.raises(SamplerError):
                sampler.sample(SampleTarget("ad_x", None, "smollm2-135m-instruct", "nf4"),
                               [SampleRequest.of([{"role": "user", "content": "hi"}], 1)],
                               SamplingParams())
        time.sleep(0.1)  # the runner thread's last records
    logged = json_log.getvalue() + caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    # The flow did log where a secret could leak: the SDK's requests at DEBUG (OpenAI and vLLM), the failures.
    assert "Raising connection error" in json_log.getvalue()  # the vLLM sampler tried its server
    assert any(r.name.startswith("openai") and r.levelno == logging.DEBUG for r in caplog.records)
    for secret in (OPENAI_KEY, VLLM_KEY, PEPPER, api_key):
        assert secret not in logged
    assert isinstance(settings.openai_api_key, SecretStr) and OPENAI_KEY not in repr(settings)
