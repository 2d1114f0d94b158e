"""Sampling throughput: the original study's per-sample loop against our samplers, in one run.

    python bench/sampling.py --adapter DIR [--n 64] [--max-tokens 256] [--skip-vllm]

Every variant gets the same base model, adapter, prompts (n, half control, half impaired, rendered by
the one prompt renderer), per-sample seeds and sampling parameters:

  (a1) the study's loop on transformers: the adapter merged into the fp32 base, one ``generate`` per prompt
  (a2) the study's loop on vLLM's offline engine (bench/vllm_offline_loop.py in the vLLM venv),
       on the same merged model; its all-prompts-in-one-call mode is printed for comparison
  (b)  our transformers sampler (worker/sampling/hf.py): batched, a seed and a stop per row
  (c)  our vLLM sampler (worker/sampling/vllm.py) against a local vLLM server, the adapter loaded at
       run time; (c') the same server serving the merged model instead (what merging would gain)

It prints tokens/s and samples/s for each, the ratios of (b) and (c) to the faster per-sample loop,
peak memory, and writes everything as JSON (``--out``). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, tree_rss_mib  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.domain.prompts import default_prompt_set  # noqa: E402
from app.domain.sampling import SamplingParams, sample_seed  # noqa: E402
from app.settings import Settings  # noqa: E402

BASE = "smollm2-135m-instruct"
LABELS = ("control", "impaired")


@dataclass
class Result:
    name: str
    samples: int
    tokens: int
    seconds: float
    note: str = ""
    peak_rss_mib: float | None = None  # of the process tree that ran it, when that is not this process

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, type=Path, help="A PEFT LoRA adapter directory of this service.")
    parser.add_argument("--n", type=int, default=64, help="Samples per variant (half per label).")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-vllm", action="store_true", help="Only (a1) and (b).")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = Settings(cache_dir=Path(os.environ.get("SYNTHAUG_CACHE_DIR", ROOT / ".cache")),
                        data_dir=Path(tempfile.mkdtemp(prefix="synthaug-bench-")))
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_tokens=args.max_tokens, seed=args.seed)
    prompt_set = default_prompt_set()
    jobs = [(LABELS[i % 2], i // 2) for i in range(args.n)]
    messages = {label: prompt_set.inference_messages(label) for label in LABELS}
    seeds = [sample_seed(args.seed, label, index) for label, index in jobs]
    started = datetime.now(timezone.utc)
    print(f"{started:%Y-%m-%d %H:%M} UTC  {platform.node()}  {os.cpu_count()} CPUs  {cpu_model()}")
    print(f"python {platform.python_version()}  command: python {' '.join(sys.argv)}")
    print(f"n={args.n} max_tokens={args.max_tokens} {params.model_dump(exclude={'stop'})}\n")

    from worker.models import materialize_base_model

    base_dir = materialize_base_model(BASE, settings.resolved_cache_dir)
    merged_dir = Path(settings.data_dir) / "merged"
    tokenizer = _merge(args.adapter, base_dir, merged_dir)
    from worker.prompt_format import render_prompt

    prompts = [render_prompt(tokenizer, messages[label]) for label, _ in jobs]

    results = [_shown(_transformers_loop(merged_dir, tokenizer, prompts, seeds, params))]
    if not args.skip_vllm:
        results += map(_shown, _vllm_offline(settings, merged_dir, prompts, seeds, params))
    results.append(_shown(_ours_hf(settings, args.adapter, jobs, messages, seeds, params)))
    if not args.skip_vllm:
        results += map(_shown, _ours_vllm(settings, args.adapter, merged_dir, prompts, jobs, messages, seeds, params))
    _report(results, args)


def _shown(result: Result) -> Result:
    """Print a result as soon as it is measured (a later failure must not lose it)."""
    print(f"measured {result.name}: {result.tokens} tokens in {result.seconds:.1f} s "
          f"({result.tokens_per_s:.1f} tok/s, {result.samples_per_s:.3f} samples/s) {result.note}", flush=True)
    return result


def _merge(adapter: Path, base_dir: Path, out: Path):
    """The adapter merged into the fp32 base, saved as a plain model directory (what the study sampled)."""
    import torch
    from peft import PeftModel

    from worker.models import load_model, load_tokenizer

    model = PeftModel.from_pretrained(load_model(base_dir, "none", "cpu", dtype=torch.float32), str(adapter))
    model = model.merge_and_unload()
    model.save_pretrained(str(out))
    tokenizer = load_tokenizer(base_dir)
    tokenizer.save_pretrained(str(out))
    return tokenizer


def _transformers_loop(merged_dir: Path, tokenizer, prompts: list[str], seeds: list[int], params: SamplingParams) -> Result:
    import torch
    from transformers import AutoModelForCausalLM

    from worker.prompt_format import encode_prompt

    # fp32: at one sequence a step is bound by reading the weights, and bf16 measured slower here.
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    options = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                   max_new_tokens=params.max_tokens, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    ids = [torch.tensor([encode_prompt(tokenizer, p)]) for p in prompts]
    with torch.inference_mode():
        model.generate(ids[0], attention_mask=torch.ones_like(ids[0]), **{**options, "max_new_tokens": 8})
        tokens, begin = 0, time.perf_counter()
        for prompt_ids, seed in zip(ids, seeds):
            torch.manual_seed(seed % 2**32)
            out = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), **options)
            new = out[0, prompt_ids.shape[1]:].tolist()
            tokens += new.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in new else len(new)
    return Result("(a1) study loop, transformers generate, one prompt per call", len(prompts), tokens,
                  time.perf_counter() - begin, "merged adapter, fp32")


def _vllm_offline(settings: Settings, merged_dir: Path, prompts: list[str], seeds: list[int],
                  params: SamplingParams) -> list[Result]:
    from worker.vllm_server import ensure_venv, server_env, venv_python

    ensure_venv(settings)
    prompt_file = Path(settings.data_dir) / "prompts.json"
    prompt_file.write_text(json.dumps([{"prompt": p, "seed": s % 2**31} for p, s in zip(prompts, seeds)]))
    command = [str(venv_python(settings)), str(ROOT / "bench" / "vllm_offline_loop.py"), "--model", str(merged_dir),
               "--prompts", str(prompt_file), "--max-tokens", str(params.max_tokens),
               "--temperature", str(params.temperature), "--top-p", str(params.top_p), "--top-k", str(params.top_k)]
    process = subprocess.Popen(command, env=server_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    with TreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate(timeout=3600)
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"vllm_offline_loop.py failed ({process.returncode}):\n{stderr[-3000:]}")
    names = {"loop": "(a2) study loop, vLLM offline LLM.generate, one prompt per call",
             "batch": "(a2') vLLM offline LLM.generate, all prompts in one call"}
    return [Result(names[r["mode"]], r["samples"], r["generated_tokens"], r["seconds"],
                   f"merged adapter; engine start {r['engine_startup_s']} s not counted", memory.peak_mib)
            for r in lines if r.get("mode") in names]


def _ours_hf(settings, adapter: Path, jobs, messages, seeds, params) -> Result:
    from worker.sampling import SampleRequest, SampleTarget, build_sampler

    sampler = build_sampler("hf", settings)
    target = SampleTarget("bench", adapter, BASE, "nf4")
    requests = [SampleRequest.of(messages[label], seed) for (label, _), seed in zip(jobs, seeds)]
    sampler.sample(target, requests[:2], params.model_copy(update={"max_tokens": 8}))  # load + warm-up
    chunk = sampler.chunk_size(target, params)
    begin = time.perf_counter()
    completions = []
    for start in range(0, len(requests), chunk):
        completions += sampler.sample(target, requests[start:start + chunk], params)
    return Result("(b) ours: transformers sampler (batched, per-row seed and stop)", len(completions),
                  sum(c.tokens for c in completions), time.perf_counter() - begin, f"batch {chunk}")


def _ours_vllm(settings, adapter: Path, merged_dir: Path, prompts, jobs, messages, seeds, params) -> list[Result]:
    from worker.sampling import SampleRequest, SampleTarget, build_sampler
    from worker.vllm_server import running_server, supported_lora_rank

    requests = [SampleRequest.of(messages[label], seed) for (label, _), seed in zip(jobs, seeds)]
    target = SampleTarget("bench-adapter", adapter, BASE, "nf4")
    # vLLM's CPU LoRA cost grows with --max-lora-rank: serve at the adapter's own rank, as a
    # deployment for these adapters would.
    rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
    settings = settings.model_copy(update={"vllm_max_lora_rank": supported_lora_rank(rank), "vllm_max_loras": 1})
    results = []
    with running_server(settings) as server, TreeMemory(server.process.pid) as memory:
        sampler = build_sampler("vllm", settings.model_copy(update={"vllm_base_url": server.base_url}))
        begin = time.perf_counter()
        sampler.sample(target, requests[:2], params.model_copy(update={"max_tokens": 8}))
        warm = time.perf_counter() - begin
        begin = time.perf_counter()
        completions = sampler.sample(target, requests, params)
        seconds = time.perf_counter() - begin
    results.append(Result("(c) ours: vLLM sampler, adapter loaded at run time (LoRA)", len(completions),
                          sum(c.tokens for c in completions), seconds,
                          f"first LoRA request {warm:.0f} s, not counted; --max-lora-rank {settings.vllm_max_lora_rank}",
                          memory.peak_mib))
    with running_server(settings, model_dir=merged_dir, served_name="merged") as server, \
            TreeMemory(server.process.pid) as memory:
        import openai

        client = openai.OpenAI(base_url=server.base_url, api_key="none", timeout=3600)

        def complete(prompt_seed):
            prompt, seed = prompt_seed
            response = client.completions.create(
                model="merged", prompt=prompt, max_tokens=params.max_tokens, temperature=params.temperature,
                top_p=params.top_p, seed=seed % 2**31,
                extra_body={"top_k": params.top_k or -1, "add_special_tokens": False})
            return response.usage.completion_tokens

        with ThreadPoolExecutor(settings.vllm_concurrency) as pool:
            list(pool.map(complete, list(zip(prompts, seeds))[:2]))
            begin = time.perf_counter()
            tokens = sum(pool.map(complete, zip(prompts, seeds)))
            seconds = time.perf_counter() - begin
    results.append(Result("(c') the same vLLM server serving the merged model (no LoRA)", len(prompts), tokens,
                          seconds, "", memory.peak_mib))
    return results


class TreeMemory:
    """The peak of the summed resident memory of a process and its descendants, polled every 0.2 s.

    getrusage(RUSAGE_CHILDREN) cannot say this: a child forked from a big parent starts with the
    parent's resident size, and vLLM's engine runs in grandchildren.
    """

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mib = max(self.peak_mib, tree_rss_mib(self.pid))




def _report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"{'variant':<72} {'samples':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'samples/s':>9}")
    for r in results:
        print(f"{r.name:<72} {r.samples:>7} {r.tokens:>7} {r.seconds:>8.1f} {r.tokens_per_s:>7.1f} "
              f"{r.samples_per_s:>9.3f}  {r.note}")
    loops = [r for r in results if r.name.startswith(("(a1)", "(a2)"))]
    fastest = max(loops, key=lambda r: r.samples_per_s)
    print(f"\nfaster per-sample loop: {fastest.name.split(',')[0]}")
    for r in results:
        if r.name.startswith(("(b)", "(c)", "(c')")):
            print(f"{r.name.split(':')[0]}: {r.samples_per_s / fastest.samples_per_s:.1f}x samples/s and "
                  f"{r.tokens_per_s / fastest.tokens_per_s:.1f}x tokens/s over the per-sample loop")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process ((a1) and (b) models, merging): {own:.0f} MiB")
    for r in results:
        if r.peak_rss_mib:
            print(f"peak RSS of the vLLM processes of {r.name.split(' ')[0]}: {r.peak_rss_mib:.0f} MiB")
    if args.out:
        args.out.write_text(json.dumps({
            "args": {k: str(v) for k, v in vars(args).items()},
            "results": [{**asdict(r), "tokens_per_s": r.tokens_per_s, "samples_per_s": r.samples_per_s}
                        for r in results],
            "peak_rss_mib_self": own,
        }, indent=2))



if __name__ == "__main__":
    main()
