"""Training throughput: our trainer against the original study's SFTTrainer setup, in one run.

    python bench/training.py [--steps 20] [--batch-size 4] [--rounds 1] [--quick]

Both variants train the bundled SmolLM2-135M-Instruct, QLoRA (nf4 double-quant base, the worker's CPU
compute dtype), with the job defaults' LoRA (r 64, alpha 16, dropout 0.1, the default target modules),
optimizer fallback, learning rate and schedule, on the train split of examples/adress_illustrative.csv
rendered through the default prompt set, for the same batch size and number of steps:

  (study) TRL ``SFTTrainer`` as the original study set it up: a ``text`` field holding the whole
          rendered example, ``packing=False``, ``max_length=1024`` (the study's ``max_seq_length``),
          length-grouped batches (``group_by_length=True``, now ``train_sampling_strategy``), pad
          token = eos token, each batch padded to its longest example, loss on every token
  (ours)  ``worker.training.hf.HFTrainer.train`` called the way the worker calls it (with the service's
          default SYNTHAUG_CPU_UNPACKED_BASE_MAX_BYTES): on CPU the frozen nf4 base unpacked once, LoRA
          weights in fp32 (the compute dtype), the output layer on labelled positions only

Each variant runs in a child process of its own (same thread count), so that each one's peak memory
is its own; ``--rounds 2`` alternates them (study, ours, study, ours) against a drifting machine. The
first ``--warmup`` steps are not timed. Tokens are counted alike for both, from the batches the
Trainer hands the model: real tokens (not padding) and padded tokens (the tensor the model computed).
Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE = "smollm2-135m-instruct"
EXAMPLES = ROOT / "examples" / "adress_illustrative.csv"
VARIANTS = ("study", "ours")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="Timed optimizer steps per variant.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before them.")
    parser.add_argument("--batch-size", type=int, default=4, help="Examples per step (the job default is 4).")
    parser.add_argument("--rounds", type=int, default=1, help="Run the variants this many times, alternating.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in each variant.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="A smoke run: 2 timed steps after 1 warm-up step.")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process's one variant
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 2, 1
    return args


def main() -> None:
    args = parse_args()
    if args.variant:
        print(json.dumps(_run_variant(args)), flush=True)
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC  {platform.node()}  {os.cpu_count()} CPUs  "
          f"{cpu_model()}")
    print(f"python {platform.python_version()}  command: python {' '.join(sys.argv)}")
    print(f"steps={args.steps} (+{args.warmup} warm-up) batch_size={args.batch_size} threads={args.threads}\n")
    results = []
    for round_ in range(args.rounds):
        for variant in VARIANTS:
            result = _child(args, variant)
            result["round"] = round_ + 1
            results.append(result)
            print(f"measured {variant} (round {round_ + 1}): {result['real_tokens']} real / {result['padded_tokens']} "
                  f"padded tokens in {result['seconds']:.1f} s: {result['real_tokens_per_s']:.1f} real tok/s, "
                  f"{result['padded_tokens_per_s']:.1f} padded tok/s, peak RSS {result['peak_rss_mib']:.0f} MiB",
                  flush=True)
    _report(results, args)


def _child(args: argparse.Namespace, variant: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               "--seed", str(args.seed)]
    process = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"the {variant} variant failed ({process.returncode}):\n{process.stderr[-4000:]}")
    return json.loads(lines[-1])


# one variant, in its own process

def _run_variant(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    meter = _StepMeter()
    meter.install()
    examples = _train_examples(args.seed)
    total_steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="synthaug-bench-train-") as tmp:
        if args.variant == "study":
            _train_study(examples, args, total_steps, Path(tmp), meter)
        else:
            _train_ours(examples, args, total_steps, Path(tmp), meter)
    return meter.result(args.variant, args.warmup, total_steps)


def _train_examples(seed: int) -> list:
    """The train split's chat examples, drawn as ``finetune_jobs.training_examples`` draws them."""
    from app.domain.ingestion.records import ColumnMapping
    from app.domain.ingestion.upload import parse_upload
    from app.domain.prompts import default_prompt_set

    records, report = parse_upload(EXAMPLES.read_bytes(), EXAMPLES.name, ColumnMapping(), max_bytes=20 << 20)
    assert report.ok, report
    prompt_set, rng = default_prompt_set(), random.Random(seed)
    return [prompt_set.training_messages(r.label, r.text, rng) for r in records if r.split == "train"]


def _hyperparameters(args: argparse.Namespace, total_steps: int):
    from app.domain.hyperparameters import Hyperparameters

    # The job defaults, for a fixed number of steps, without evaluation or checkpoints (neither trains).
    return Hyperparameters(max_steps=total_steps, batch_size=args.batch_size, eval_each_epoch=False,
                           checkpoint_each_epoch=False)


def _train_ours(examples: list, args: argparse.Namespace, total_steps: int, tmp: Path, meter: "_StepMeter") -> None:
    from worker.training.base import TrainSpec
    from worker.training.hf import HFTrainer

    from app.settings import Settings

    spec = TrainSpec(base_model=BASE, method="qlora", hyperparameters=_hyperparameters(args, total_steps),
                     seed=args.seed, output_dir=tmp, cache_dir=_cache_dir(),
                     unpacked_base_max_bytes=Settings().cpu_unpacked_base_max_bytes)
    HFTrainer().train(spec, examples, [], meter.on_event, lambda: False)


def _train_study(examples: list, args: argparse.Namespace, total_steps: int, tmp: Path, meter: "_StepMeter") -> None:
    import datasets
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from app.domain.base_models import resolve_base_model
    from worker.models import load_model, load_tokenizer, materialize_base_model
    from worker.prompt_format import completion_text, render_prompt
    from worker.training.base import TrainSpec
    from worker.training.hf import _EventCallback, build_configs

    hp = _hyperparameters(args, total_steps)
    spec = TrainSpec(base_model=BASE, method="qlora", hyperparameters=hp, seed=args.seed, output_dir=tmp,
                     cache_dir=_cache_dir())
    # The same LoRA config and device fallbacks (optimizer) as a job with these hyperparameters.
    ours = build_configs(spec, approx_params=resolve_base_model(BASE, None).approx_params, device="cpu",
                         has_eval=False)
    model_dir = materialize_base_model(BASE, spec.cache_dir)
    tokenizer = load_tokenizer(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    # The whole example as one text: the rendered prompt, the transcript and the end token.
    texts = [render_prompt(tokenizer, m[:-1]) + completion_text(tokenizer, m[-1]["content"]) for m in examples]
    set_seed(args.seed)
    model = load_model(model_dir, "nf4", "cpu")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ours.sft.activation_checkpointing)
    model = get_peft_model(model, ours.lora)
    config = SFTConfig(
        output_dir=str(tmp / "checkpoints"),
        dataset_text_field="text",
        packing=False,
        max_length=1024,
        train_sampling_strategy="group_by_length",
        per_device_train_batch_size=args.batch_size,
        max_steps=total_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_ratio,
        optim=ours.sft.optim,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        activation_checkpointing=ours.sft.activation_checkpointing,
        seed=args.seed,
        data_seed=args.seed,
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_dict({"text": texts}),
                         processing_class=tokenizer, callbacks=[_EventCallback(meter.on_event, lambda: False)])
    trainer.train()


class _StepMeter:
    """Tokens of each batch the Trainer trains on, and the time each optimizer step's log arrives."""

    def __init__(self) -> None:
        self.real: list[int] = []
        self.padded: list[int] = []
        self.logged: dict[int, float] = {}

    def install(self) -> None:
        import transformers

        original = transformers.Trainer.training_step

        def training_step(trainer, model, inputs, *rest, **kwargs):
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            # Padding-free batches carry no mask: every token in them is real.
            self.real.append(int(mask.sum()) if mask is not None else ids.numel())
            self.padded.append(ids.numel())
            return original(trainer, model, inputs, *rest, **kwargs)

        transformers.Trainer.training_step = training_step

    def on_event(self, event) -> None:
        if event.kind == "metrics" and event.step is not None:
            self.logged[event.step] = time.perf_counter()

    def result(self, variant: str, warmup: int, total_steps: int) -> dict:
        seconds = self.logged[total_steps] - self.logged[warmup] if warmup else None
        if seconds is None:
            raise SystemExit("--warmup must be at least 1: the first step's start is not logged")
        real, padded = sum(self.real[warmup:total_steps]), sum(self.padded[warmup:total_steps])
        return {
            "variant": variant, "steps": total_steps - warmup, "seconds": seconds,
            "real_tokens": real, "padded_tokens": padded,
            "real_tokens_per_s": real / seconds, "padded_tokens_per_s": padded / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def _cache_dir() -> Path:
    return Path(os.environ.get("SYNTHAUG_CACHE_DIR", ROOT / ".cache"))


def _report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{'variant':<8} {'round':>5} {'steps':>5} {'seconds':>8} {'real tok':>8} {'padded':>8} "
          f"{'real tok/s':>10} {'padded tok/s':>12} {'peak MiB':>8}")
    for r in results:
        print(f"{r['variant']:<8} {r['round']:>5} {r['steps']:>5} {r['seconds']:>8.1f} {r['real_tokens']:>8} "
              f"{r['padded_tokens']:>8} {r['real_tokens_per_s']:>10.1f} {r['padded_tokens_per_s']:>12.1f} "
              f"{r['peak_rss_mib']:>8.0f}")
    totals = {}
    for variant in VARIANTS:
        runs = [r for r in results if r["variant"] == variant]
        seconds = sum(r["seconds"] for r in runs)
        totals[variant] = {"real": sum(r["real_tokens"] for r in runs) / seconds,
                           "padded": sum(r["padded_tokens"] for r in runs) / seconds}
    print(f"\nours / study: {totals['ours']['real'] / totals['study']['real']:.2f}x real tokens/s, "
          f"{totals['ours']['padded'] / totals['study']['padded']:.2f}x padded tokens/s "
          f"(all rounds pooled)")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                                        "ratio_real": totals["ours"]["real"] / totals["study"]["real"]}, indent=2))



if __name__ == "__main__":
    main()
