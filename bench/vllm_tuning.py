"""vLLM on this CPU: what each server setting costs or gains for our LoRA sampler, in one run.

    python bench/vllm_tuning.py --adapter DIR [--n 32] [--max-tokens 128] [--only NAME ...]

Starts the local vLLM server once per configuration, each a single change from the service's default
(``worker.vllm_server.ServerOptions`` and the settings' LoRA limits), and samples the same n prompts
(half per label, per-sample seeds) through our vLLM sampler with the adapter loaded at run time.
It prints, per configuration: server start, the first LoRA request (two short samples, timed on its
own), then tokens/s and samples/s of the n samples, their ratio to the default's, and the peak
resident memory of the server's process tree. A configuration that does not finish within
``--timeout`` seconds is reported as such (torch.compile on a CPU can stall for many minutes).
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.domain.prompts import default_prompt_set  # noqa: E402
from app.domain.sampling import SamplingParams, sample_seed  # noqa: E402
from app.settings import Settings  # noqa: E402
from sampling import BASE, LABELS, TreeMemory, _cpu_model  # noqa: E402
from worker.vllm_server import ServerOptions, VLLMServerError, running_server, supported_lora_rank  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    what: str
    options: ServerOptions = ServerOptions()
    settings: dict = field(default_factory=dict)  # Settings overrides (LoRA limits)
    env: dict = field(default_factory=dict)  # vLLM's CPU environment variables


def configs(adapter_rank: int) -> list[Config]:
    rank = supported_lora_rank(adapter_rank)
    lora = {"vllm_max_lora_rank": rank, "vllm_max_loras": 1}
    return [
        Config("default", f"eager, max-lora-rank {rank} (the adapter's), max-loras 1, 64 seqs, "
                          "1024 batched tokens, KV 2 GiB, threads bound to every core", settings=lora),
        Config("rank-64", "--max-lora-rank 64 (the study's rank) for the same adapter",
               settings={**lora, "vllm_max_lora_rank": 64}),
        Config("loras-4", "--max-loras 4 (four adapters per batch)", settings={**lora, "vllm_max_loras": 4}),
        Config("seqs-16", "--max-num-seqs 16", ServerOptions(max_num_seqs=16), settings=lora),
        Config("batched-4096", "--max-num-batched-tokens 4096 (more prompts prefilled per step)",
               ServerOptions(max_num_batched_tokens=4096), settings=lora),
        Config("kv-8", "VLLM_CPU_KVCACHE_SPACE=8 (GiB)", settings=lora, env={"VLLM_CPU_KVCACHE_SPACE": "8"}),
        Config("bind-auto", "VLLM_CPU_OMP_THREADS_BIND=auto (vLLM's own default: leaves a core to the API server)",
               settings=lora, env={"VLLM_CPU_OMP_THREADS_BIND": "auto"}),
        Config("compiled", "torch.compile (no --enforce-eager)", ServerOptions(eager=False), settings=lora),
    ]


@dataclass
class Outcome:
    name: str
    what: str
    startup_s: float | None = None
    first_lora_s: float | None = None
    tokens: int = 0
    seconds: float | None = None
    peak_mib: float = 0.0
    error: str = ""

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, type=Path, help="A PEFT LoRA adapter directory of this service.")
    parser.add_argument("--n", type=int, default=32, help="Samples per configuration (half per label).")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds a configuration may take to sample.")
    parser.add_argument("--only", nargs="*", default=None, help="Configuration names to run (default: all).")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings(cache_dir=Path(os.environ.get("SYNTHAUG_CACHE_DIR", ROOT / ".cache")),
                        data_dir=Path(tempfile.mkdtemp(prefix="synthaug-bench-")),
                        vllm_request_timeout_s=args.timeout, vllm_max_retries=0)
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=50, max_tokens=args.max_tokens, seed=args.seed)
    from worker.sampling import SampleRequest, SampleTarget

    prompt_set = default_prompt_set()
    messages = {label: prompt_set.inference_messages(label) for label in LABELS}
    jobs = [(LABELS[i % 2], i // 2) for i in range(args.n)]
    requests = [SampleRequest.of(messages[label], sample_seed(args.seed, label, index)) for label, index in jobs]
    target = SampleTarget("bench-adapter", args.adapter, BASE, "nf4")
    adapter_rank = json.loads((args.adapter / "adapter_config.json").read_text())["r"]

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  {os.cpu_count()} CPUs  {_cpu_model()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"adapter rank {adapter_rank}; n={args.n} max_tokens={args.max_tokens}\n", flush=True)
    outcomes = []
    for config in configs(adapter_rank):
        if args.only and config.name not in args.only:
            continue
        outcome = _measure(config, settings, target, requests, params)
        print(f"{outcome.name}: {_line(outcome)}", flush=True)
        outcomes.append(outcome)
    _report(outcomes)
    if args.out:
        args.out.write_text(json.dumps([{**vars(o), "tokens_per_s": o.tokens_per_s} for o in outcomes], indent=2))


def _measure(config: Config, settings: Settings, target, requests, params) -> Outcome:
    from worker.sampling import SamplerError, build_sampler

    outcome = Outcome(config.name, config.what)
    saved = {key: os.environ.get(key) for key in config.env}
    os.environ.update(config.env)  # server_env() passes the caller's vLLM tunables on
    settings = settings.model_copy(update=config.settings)
    begin = time.perf_counter()
    try:
        with running_server(settings, options=config.options) as server, TreeMemory(server.process.pid) as memory:
            outcome.startup_s = time.perf_counter() - begin
            sampler = build_sampler("vllm", settings.model_copy(update={"vllm_base_url": server.base_url}))
            try:
                begin = time.perf_counter()
                sampler.sample(target, requests[:2], params.model_copy(update={"max_tokens": 8}))
                outcome.first_lora_s = time.perf_counter() - begin
                begin = time.perf_counter()
                completions = sampler.sample(target, requests, params)
                outcome.seconds = time.perf_counter() - begin
                outcome.tokens = sum(c.tokens for c in completions)
            except SamplerError as exc:
                outcome.error = f"after {time.perf_counter() - begin:.0f} s: {str(exc).splitlines()[0][:160]}"
            finally:
                outcome.peak_mib = memory.peak_mib
    except VLLMServerError as exc:
        outcome.error = str(exc).splitlines()[0][:200]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return outcome


def _line(o: Outcome) -> str:
    parts = [f"start {o.startup_s:.0f} s" if o.startup_s else "",
             f"first LoRA request {o.first_lora_s:.0f} s" if o.first_lora_s else "",
             f"{o.tokens} tokens in {o.seconds:.1f} s = {o.tokens_per_s:.1f} tok/s" if o.seconds else "",
             f"peak {o.peak_mib:.0f} MiB" if o.peak_mib else "", f"FAILED {o.error}" if o.error else ""]
    return ", ".join(p for p in parts if p)


def _report(outcomes: list[Outcome]) -> None:
    default = next((o for o in outcomes if o.name == "default" and o.tokens_per_s), None)
    print(f"\n{'configuration':<14} {'start s':>7} {'1st LoRA s':>10} {'tok/s':>7} {'x default':>9} {'peak MiB':>8}  change")
    for o in outcomes:
        ratio = f"{o.tokens_per_s / default.tokens_per_s:.2f}" if default and o.tokens_per_s else "-"
        print(f"{o.name:<14} {_num(o.startup_s, 7)} {_num(o.first_lora_s, 10)} {_num(o.tokens_per_s, 7, 1)} "
              f"{ratio:>9} {o.peak_mib:>8.0f}  {o.what}{'  FAILED ' + o.error if o.error else ''}")


def _num(value: float | None, width: int, digits: int = 0) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


if __name__ == "__main__":
    main()
