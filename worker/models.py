"""Base models on disk: GGUF conversion into the cache, and loading models and tokenizers."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from app.domain.base_models import BaseModelRef, resolve_base_model

Quantization = Literal["nf4", "none"]

# Written next to every adapter: which registry base model, method and quantization it needs.
ADAPTER_MANIFEST = "synthaug.json"
# What PEFT reads from an adapter directory (our trainer always saves safetensors).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def materialize_base_model(name: str, cache_dir: Path) -> Path:
    """A local Hugging Face directory for a base model, converting a bundled GGUF once."""
    ref = resolve_base_model(name, None)  # a job's name, accepted when the job was submitted
    if ref.kind != "gguf_package":
        return Path(ref.location)
    target = Path(cache_dir) / "models" / ref.name
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # The lock serialises converters on one machine; the atomic rename protects readers (and
    # machines sharing a volume without working locks) from a half-written directory.
    with open(target.parent / f".{ref.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_complete(target):
            _convert_gguf(ref, target)
    return target


def load_tokenizer(model_dir: Path):
    """The tokenizer saved with a model directory, with a pad token for batching."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: Path, quantization: Quantization, device: str = "cpu", dtype=None):
    """A causal LM from a local directory: nf4 double-quant (QLoRA) or unquantized in ``dtype``
    (default: the compute dtype of the device)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"device_map": {"": device}}
    if quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(device)
    else:
        kwargs["dtype"] = dtype or compute_dtype(device)
    return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)


def adapter_problem(adapter_dir: Path | None) -> str | None:
    """What makes an adapter directory unloadable (missing or damaged files), or None when it looks sound.

    Checked before loading, so a damaged adapter fails with a sentence naming the file rather than
    whatever PEFT or safetensors raise halfway through; the answer names files, never server paths.
    """
    if adapter_dir is None or not Path(adapter_dir).is_dir():
        return "its directory is missing"
    config_path = Path(adapter_dir) / ADAPTER_CONFIG
    if not config_path.is_file():
        return f"{ADAPTER_CONFIG} is missing"
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{ADAPTER_CONFIG} is not valid JSON ({exc})"
    if not isinstance(config, dict) or "peft_type" not in config:
        return f"{ADAPTER_CONFIG} is not a PEFT adapter configuration (no peft_type)"
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        return f"{ADAPTER_WEIGHTS} is missing"
    from safetensors import SafetensorError, safe_open

    try:
        # Opening reads the header and checks that the file holds every byte it declares.
        with safe_open(str(weights), framework="numpy"):
            pass
    except (SafetensorError, OSError) as exc:
        return f"{ADAPTER_WEIGHTS} is truncated or not a safetensors file ({exc})"
    return None


def nf4_config(device: str = "cpu"):
    """The QLoRA quantization: 4-bit NormalFloat, double quantization, bf16 compute on CUDA."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device),
    )


def compute_dtype(device: str):
    """bf16 on CUDA; fp32 on CPU, where bf16 matmuls without AMX ran 20-40x slower (measured)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _is_complete(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()


def _convert_gguf(ref: BaseModelRef, target: Path) -> None:
    """Dequantize a GGUF file into safetensors plus tokenizer, then rename into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(ref.location)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a model that still carries the GGUF quantizer, so rebuild a plain
    # model from the same config and copy the (already dequantized) weights across.
    config = loaded.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    staging = Path(tempfile.mkdtemp(prefix=f".{ref.name}.", dir=target.parent))
    try:
        plain.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        # mkdtemp makes the directory private; other workers on a shared volume must read it.
        for path in (staging, *staging.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            os.rename(staging, target)
        except OSError:
            if not _is_complete(target):
                raise
            # Another process won the race with an identical conversion: keep theirs.
    finally:
        shutil.rmtree(staging, ignore_errors=True)
