"""`synthaug serve` as a user starts it: embedded (SQLite in a fresh data directory, jobs run by the
in-process runner that start_embedded starts), a real uvicorn on a free port, driven over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from app.local_secrets import FIRST_KEY_FILE
from tests.conftest import EXAMPLE_CSV, TEST_PEPPER

pytestmark = pytest.mark.slow

SYNTHAUG = Path(sys.executable).parent / "synthaug"
# One optimizer step, no evaluation or checkpoint: the cheapest fine-tune that runs the trainer.
ONE_STEP = {"lora_r": 4, "lora_alpha": 8, "max_steps": 1, "batch_size": 2, "max_seq_length": 256,
            "eval_each_epoch": False, "checkpoint_each_epoch": False}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    """A running `synthaug serve` process, its data directory, environment and log."""

    def __init__(self, data_dir: Path, cache_dir: Path, log_path: Path) -> None:
        self.data_dir, self.log_path, self.port = data_dir, log_path, free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHAUG_")}
        self.env.update(SYNTHAUG_DATA_DIR=str(data_dir), SYNTHAUG_CACHE_DIR=str(cache_dir), SYNTHAUG_ENV="test",
                        SYNTHAUG_KEY_PEPPER=TEST_PEPPER)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(SYNTHAUG), "serve", "--port", str(self.port)], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"synthaug serve exited:\n{self.log()}"
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {timeout_s} s:\n{self.log()}"
            time.sleep(0.2)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
def served(tmp_path, cache_dir) -> Iterator[Served]:
    server = Served(tmp_path / "data", cache_dir, tmp_path / "serve.log")
    server.start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def first_key(served: Served) -> str:
    """The key start_embedded made for tenant 'default', from the file serve writes it to."""
    path = served.data_dir / FIRST_KEY_FILE
    assert path.is_file(), served.log()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


class TestServe:
    def test_embedded_serve_takes_an_upload_and_runs_a_fine_tune_in_process(self, served):
        served.wait_healthy()
        assert (served.data_dir / "synthaug.db").is_file()  # start_embedded migrated a fresh data directory
        key = first_key(served)
        assert key not in served.log()  # its output is not a terminal: the key stays out of the log
        client = httpx.Client(base_url=served.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"})
        assert client.get("/readyz").status_code == 200
        r = client.post("/datasets", files={"file": ("adress.csv", EXAMPLE_CSV.read_bytes(), "text/csv")})
        assert r.status_code == 201, r.text
        r = client.post("/finetune-jobs", json={"dataset_id": r.json()["id"], "method": "qlora",
                                                "hyperparameters": ONE_STEP})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 600
        while (job := client.get(f"/finetune-jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"job still {job['status']}:\n{served.log()}"
            time.sleep(0.5)
        assert job["status"] == "succeeded", f"{job['error']}\n{served.log()}"
        assert job["step"] == 1 and job["attempts"] == 1 and job["adapter_id"]
        assert client.get(f"/adapters/{job['adapter_id']}").status_code == 200
        client.close()
        # uvicorn shuts down, then raises the signal it caught again: the process ends as SIGTERM ends one.
        assert served.stop() == -signal.SIGTERM and "Application shutdown complete" in served.log(), served.log()
