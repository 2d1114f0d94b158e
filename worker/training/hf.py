"""LoRA / QLoRA fine-tuning with TRL's SFTTrainer and PEFT (CPU or CUDA)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import datasets
import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, PrinterCallback, TrainerCallback, set_seed
from trl import SFTConfig, SFTTrainer

from app.domain.base_models import default_target_modules, resolve_base_model
from worker.artifacts import removing_unfinished_checkpoints, reporting_disk_full, staged_directory
from worker.models import ADAPTER_MANIFEST, load_model, load_tokenizer, materialize_base_model, nf4_config
from worker.prompt_format import completion_text, encode_completion, encode_prompt, render_prompt
from worker.training.base import Example, TrainEvent, TrainResult, TrainSpec

QUANTIZATION = {"qlora": "nf4", "lora": "none"}


class TrainingConfigs(NamedTuple):
    """Everything the libraries are configured with, and the device fallbacks that shaped it."""

    lora: LoraConfig
    quantization: BitsAndBytesConfig | None
    sft: SFTConfig
    fallbacks: list[str]


def build_configs(
    spec: TrainSpec, *, approx_params: int | None, device: str, has_eval: bool = True
) -> TrainingConfigs:
    """Map a job spec onto LoraConfig, BitsAndBytesConfig (qlora only) and SFTConfig."""
    hp = spec.hyperparameters
    fallbacks: list[str] = []
    cuda = device.startswith("cuda")
    optimizer = hp.optimizer
    if optimizer.startswith("paged_") and not cuda:
        fallbacks.append(f"optimizer {optimizer} needs CUDA; using adamw_torch")
        optimizer = "adamw_torch"
    bf16 = False
    if hp.fp16 and not cuda:
        # bf16 autocast was 25x slower than fp32 on a 2-core AVX2 CPU (measured), so not bf16.
        fallbacks.append("fp16 mixed precision needs CUDA; training in fp32 on CPU")
    elif hp.fp16 and cuda and torch.cuda.is_bf16_supported():
        fallbacks.append("fp16 requested; this GPU supports bf16 (the nf4 compute dtype), training in bf16")
        bf16 = True
    if spec.method == "qlora" and not cuda:
        fallbacks.append("QLoRA compute dtype bfloat16 is slow on CPU; computing in fp32")
    lora = LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=hp.target_modules or default_target_modules(approx_params),
        bias="none",
        task_type="CAUSAL_LM",
    )
    sft = SFTConfig(
        output_dir=str(Path(spec.output_dir) / "checkpoints"),
        seed=spec.seed,
        data_seed=spec.seed,
        learning_rate=hp.learning_rate,
        num_train_epochs=hp.num_epochs,
        max_steps=hp.max_steps or -1,
        lr_scheduler_type=hp.lr_scheduler,
        warmup_steps=hp.warmup_ratio,  # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        # Batches of similar lengths (drawn from random groups of a few batches) are padded less:
        # 14 % of a random batch of 4 of the example data was padding, 6 % of a grouped one.
        train_sampling_strategy="group_by_length",
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        max_length=hp.max_seq_length,
        completion_only_loss=True,
        optim=optimizer,
        fp16=hp.fp16 and cuda and not bf16,
        bf16=bf16,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        eval_strategy="epoch" if hp.eval_each_epoch and has_eval else "no",
        save_strategy="epoch" if hp.checkpoint_each_epoch else "no",
        # Checkpointing activations saves GPU memory; on CPU memory is ample and it costs ~30 %.
        activation_checkpointing=cuda,
        logging_steps=1,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,
        dataloader_num_workers=0,
    )
    quantization = nf4_config(device) if spec.method == "qlora" else None
    return TrainingConfigs(lora, quantization, sft, fallbacks)


def tokenize_examples(tokenizer: Any, examples: list[Example]) -> datasets.Dataset:
    """Prompt tokens (masked from the loss) followed by completion tokens, via render_prompt."""
    rows: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    for messages in examples:
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("each training example must end with the assistant transcript")
        prompt = encode_prompt(tokenizer, render_prompt(tokenizer, messages[:-1]))
        completion = encode_completion(tokenizer, completion_text(tokenizer, messages[-1]["content"]))
        rows["input_ids"].append(prompt + completion)
        rows["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
    return datasets.Dataset.from_dict(rows)


class HFTrainer:
    """Fine-tunes with TRL SFTTrainer: qlora on an nf4 double-quant base, lora on full precision."""

    def train(
        self,
        spec: TrainSpec,
        train_examples: list[Example],
        eval_examples: list[Example],
        on_event: Callable[[TrainEvent], None],
        should_stop: Callable[[], bool],
    ) -> TrainResult:
        """Train, reporting events as they happen; the final adapter goes to output_dir/adapter."""
        if not train_examples:
            raise ValueError("no training examples")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        ref = resolve_base_model(spec.base_model, None)
        configs = build_configs(spec, approx_params=ref.approx_params, device=device, has_eval=bool(eval_examples))
        for fallback in configs.fallbacks:
            on_event(TrainEvent("fallback", fallback))

        def fall_back(note: str) -> None:
            """A fallback decided once the model is loaded: recorded in the result and as an event."""
            configs.fallbacks.append(note)
            on_event(TrainEvent("fallback", note))

        if not eval_examples and spec.hyperparameters.eval_each_epoch:
            on_event(TrainEvent("message", "no validation examples: per-epoch evaluation skipped"))
        _quiet_progress_bars()
        if device == "cpu":
            _score_labelled_positions_only()

        model_dir = materialize_base_model(spec.base_model, spec.cache_dir)
        tokenizer = load_tokenizer(model_dir)
        set_seed(spec.seed)  # LoRA weights are initialised below, before the Trainer seeds itself
        model = load_model(model_dir, QUANTIZATION[spec.method], device)
        if configs.quantization is not None:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=configs.sft.activation_checkpointing
            )
            if device == "cpu":
                unpacked = unpack_frozen_base(model, spec.unpacked_base_max_bytes)
                if unpacked:
                    fall_back(f"QLoRA on CPU: the frozen nf4 base weights are unpacked once ({unpacked / 2**20:.0f} "
                              "MiB, the same values) instead of at every matmul")
        model = get_peft_model(model, configs.lora)

        callback = _EventCallback(on_event, should_stop)
        trainer = SFTTrainer(
            model=model,
            args=configs.sft,
            train_dataset=tokenize_examples(tokenizer, train_examples),
            eval_dataset=tokenize_examples(tokenizer, eval_examples) if eval_examples else None,
            processing_class=tokenizer,
            callbacks=[callback],
        )
        # With tqdm off, the Trainer prints every log dict to stdout; events carry them instead.
        trainer.remove_callback(PrinterCallback)
        if configs.quantization is not None and device == "cpu" and _trainable_to_float32(model):
            fall_back("QLoRA on CPU: LoRA weights kept in fp32, the compute dtype here (TRL casts them to bf16, "
                      "which the CPU would convert on every layer)")
        on_event(TrainEvent("message", f"training {spec.method} on {len(train_examples)} examples ({device})"))
        # The unfinished checkpoint goes after the failure was judged: its removal frees the space that
        # tells a full disk from another failure.
        with removing_unfinished_checkpoints(Path(configs.sft.output_dir), lambda: callback.saved), \
                reporting_disk_full("a checkpoint", spec.output_dir):
            output = trainer.train(resume_from_checkpoint=str(spec.resume_from) if spec.resume_from else None)

        metrics = {**output.metrics, "global_step": trainer.state.global_step, **callback.last_eval}
        if callback.stopped:
            # Cancelled, or taken over by another worker after a missed heartbeat: no adapter is
            # registered either way, and the job's directory may be the new owner's by now (writing
            # ours there would replace its adapter).
            on_event(TrainEvent("message", f"training stopped at step {trainer.state.global_step}; no adapter "
                                "saved", data=metrics))
            return TrainResult(None, metrics, configs.fallbacks, stopped=True)
        adapter_dir = Path(spec.output_dir) / "adapter"
        with reporting_disk_full("the adapter", spec.output_dir), staged_directory(adapter_dir) as staging:
            trainer.save_model(str(staging))
            _name_base_model_not_its_path(staging, model_dir, spec.base_model)
            _write_manifest(staging, spec, ref.revision)
        on_event(TrainEvent("message", "training finished; adapter saved", path=str(adapter_dir), data=metrics))
        return TrainResult(adapter_dir, metrics, configs.fallbacks, stopped=False)


class _EventCallback(TrainerCallback):
    """Turns Trainer logs and saves into TrainEvents, and stops when the job is cancelled."""

    def __init__(self, on_event: Callable[[TrainEvent], None], should_stop: Callable[[], bool]):
        self.on_event = on_event
        self.should_stop = should_stop
        self.stopped = False
        self.last_eval: dict[str, float] = {}
        self.saved: list[Path] = []  # checkpoints written whole (on_save comes after the save)
        # (time.monotonic(), num_tokens) at the previous training log
        self._previous_log: tuple[float, int] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.on_event(
                TrainEvent(
                    "metrics",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch,
                    loss=_finite(logs["loss"]),
                    learning_rate=logs.get("learning_rate"),
                    data={"grad_norm": _finite(logs.get("grad_norm")), **self._throughput(logs)},
                )
            )
        if "eval_loss" in logs:
            self.last_eval = {"eval_loss": logs["eval_loss"]}
            self.on_event(
                TrainEvent(
                    "eval",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch,
                    eval_loss=_finite(logs["eval_loss"]),
                )
            )

    def _throughput(self, logs: dict[str, Any]) -> dict[str, float | int]:
        """num_tokens, and tokens per second since the previous log (from the second log on).

        SFTTrainer logs ``num_tokens``: the tokens (attention mask) it has trained on so far in this
        ``train()`` call, summed over processes.
        """
        if logs.get("num_tokens") is None:
            return {}
        now, tokens = time.monotonic(), int(logs["num_tokens"])
        previous, self._previous_log = self._previous_log, (now, tokens)
        if previous is None or now <= previous[0] or tokens < previous[1]:
            return {"num_tokens": tokens}
        return {"num_tokens": tokens, "tokens_per_second": (tokens - previous[1]) / (now - previous[0])}

    def _restart_clock(self) -> None:
        # An evaluation or a checkpoint runs right after a step's log and trains on nothing: the
        # next rate counts from its end, so epoch boundaries do not dip.
        if self._previous_log is not None:
            self._previous_log = (time.monotonic(), self._previous_log[1])

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.should_stop():
            self.stopped = True
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # A cancelled job ends now: no evaluation and no checkpoint for the interrupted epoch.
        if self.stopped:
            control.should_evaluate = False
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.saved.append(path)
        self.on_event(
            TrainEvent("checkpoint", step=state.global_step, total_steps=state.max_steps, epoch=state.epoch, path=str(path))
        )
        self._restart_clock()


def _name_base_model_not_its_path(adapter_dir: Path, model_dir: Path, base_model: str) -> None:
    """Tenants download this directory: PEFT's config and model card name the base model by the
    directory it was loaded from here, and the Trainer pickles its arguments (output_dir included)."""
    (adapter_dir / "training_args.bin").unlink(missing_ok=True)
    for path in adapter_dir.iterdir():
        if path.suffix in (".json", ".md", ".jinja", ".txt"):
            text = path.read_text()
            if str(model_dir) in text:
                path.write_text(text.replace(str(model_dir), base_model))


def _write_manifest(adapter_dir: Path, spec: TrainSpec, base_model_revision: str | None) -> None:
    # Downloaded with the adapter: the base model by name and revision, never by its path here.
    manifest = {
        "base_model": spec.base_model,
        "base_model_revision": base_model_revision,
        "method": spec.method,
        "quantization": QUANTIZATION[spec.method],
        "seed": spec.seed,
        "hyperparameters": spec.hyperparameters.model_dump(),
    }
    (adapter_dir / ADAPTER_MANIFEST).write_text(json.dumps(manifest, indent=2))


def unpack_frozen_base(model: torch.nn.Module, max_bytes: int) -> int:
    """Replace each nf4 linear layer by a frozen plain one holding its unpacked weights; the bytes they take.

    The base is frozen, so its nf4 weights unpack to the same values at every step: bitsandbytes
    unpacks them in every forward and again in every backward, through a bf16 copy, which was about a
    third of a CPU training step here (bench/training.py). Unpacked once, the layers compute exactly
    what they computed before (the same weights in the same dtype), for the memory of the unpacked
    weights; nothing is unpacked (0) when that would exceed ``max_bytes``.
    """
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    layers = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
              if isinstance(child, bnb.nn.Linear4bit)]
    dtype_of = {id(child): child.compute_dtype or torch.float32 for _, _, child in layers}
    needed = sum(child.in_features * child.out_features * dtype_of[id(child)].itemsize for _, _, child in layers)
    if not layers or needed > max_bytes:
        return 0
    for parent, name, child in layers:
        dtype = dtype_of[id(child)]
        plain = torch.nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
        weight = dequantize_4bit(child.weight.data, child.weight.quant_state).to(dtype)
        plain.weight = torch.nn.Parameter(weight.reshape(child.out_features, child.in_features), requires_grad=False)
        if child.bias is not None:
            plain.bias = torch.nn.Parameter(child.bias.data.to(dtype), requires_grad=False)
        setattr(parent, name, plain)
    return needed


def _trainable_to_float32(model: torch.nn.Module) -> bool:
    """Cast the trainable (LoRA) weights to fp32; whether any was in another dtype.

    SFTTrainer casts a quantized model's LoRA weights to bf16, the QLoRA paper's GPU recipe, where the
    compute dtype is bf16 too. On CPU the compute dtype is fp32: bf16 LoRA weights meant converting each
    layer's input and output at every step and, on CPUs without native bf16 (AVX2), bf16 matrix
    multiplies in a scalar fallback, the larger part of a step (bench/training.py). Called before the
    optimizer exists, so its state is fp32 from the start (and a resumed run loads fp32 state).
    """
    cast = False
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
            cast = True
    return cast


def _score_labelled_positions_only() -> None:
    """Make TRL's fused LM head project only the positions that have a label on CPU, as it does on GPUs.

    TRL scores every position except on Triton devices (a fixed shape suits compiled backends). On CPU
    that is the 49k-wide head three times per position (forward, recomputed in backward, input gradient)
    for prompt and padding positions that carry no label: about half of a batch of these examples. The
    loss, gradients and logged metrics are the same either way (tests/worker/test_training_throughput.py).
    """
    from trl.trainer import utils as trl_utils

    scores_labelled_only = trl_utils._use_triton  # its only use there: whether to drop unlabelled positions
    if getattr(scores_labelled_only, "on_cpu", False):
        return

    def labelled_only(device: torch.device) -> bool:
        return device.type == "cpu" or scores_labelled_only(device)

    labelled_only.on_cpu = True
    labelled_only.original = scores_labelled_only
    trl_utils._use_triton = labelled_only


def _quiet_progress_bars() -> None:
    # Worker logs are job events; per-map and per-shard progress bars would only bury them.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None
