"""Batched sampling from a LoRA adapter with transformers + PEFT (CPU or CUDA)."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from peft import PeftModel

from app.domain.sampling import PROMPT_ALLOWANCE, FinishReason, SamplingParams, kv_bytes_per_token
from app.settings import Settings
from worker.models import load_model, load_tokenizer, materialize_base_model
from worker.prompt_format import encode_prompt, render_prompt
from worker.sampling.base import Completion, SampleRequest, SampleTarget, check_adapter
from worker.sampling.decoding import decode

# A few adapters stay loaded per sampler; each holds a full copy of its base model.
_MAX_LOADED = 2


class HFSampler:
    """Samples with a batched decoding loop: left padding, KV cache, a seed and a stop per row."""

    name = "hf"

    def __init__(self, settings: Settings, device: str | None = None) -> None:
        self.cache_dir = settings.resolved_cache_dir
        self.max_batch = settings.hf_max_batch_size
        self.memory_fraction = settings.hf_memory_fraction
        self.max_batch_tokens = settings.max_batch_tokens
        self.max_kv_cache_bytes = settings.hf_max_kv_cache_bytes
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def chunk_size(self, target: SampleTarget, params: SamplingParams, prompt_tokens: int = PROMPT_ALLOWANCE) -> int:
        """The largest batch whose KV cache fits the memory share and the configured budgets
        (max_batch_tokens, hf_max_kv_cache_bytes), at most hf_max_batch_size."""
        model, _ = self._load(target)
        config = model.config
        row_tokens = prompt_tokens + params.max_tokens
        kv_per_row = kv_bytes_per_token(config.to_dict(), model.dtype.itemsize) * row_tokens
        # Each row also holds its logits row in fp32 (and a seen-token row for repetition penalty).
        per_row = kv_per_row + config.vocab_size * 5
        fits = int(min(self.memory_fraction * _free_memory(self.device), self.max_kv_cache_bytes) // per_row)
        return max(1, min(self.max_batch, fits, self.max_batch_tokens // row_tokens))

    def sample(
        self, target: SampleTarget, requests: Sequence[SampleRequest], params: SamplingParams
    ) -> list[Completion]:
        """One completion per request, in order, in batches of at most ``chunk_size``."""
        model, tokenizer = self._load(target)
        end_ids = _end_token_ids(model, tokenizer)
        prompts: dict[tuple, list[int]] = {}
        for request in requests:
            if request.messages not in prompts:
                prompts[request.messages] = encode_prompt(tokenizer, render_prompt(tokenizer, request.message_dicts()))
        batch = self.chunk_size(target, params, max(len(p) for p in prompts.values()))
        completions: list[Completion] = []
        for start in range(0, len(requests), batch):
            part = requests[start : start + batch]
            rows = decode(
                model, [prompts[r.messages] for r in part], [r.seed for r in part], params,
                end_ids=end_ids, pad_id=tokenizer.pad_token_id, tokenizer=tokenizer,
            )
            for row in rows:
                text = tokenizer.decode(row.tokens, skip_special_tokens=True)
                if row.stop is not None:
                    text = text.split(row.stop, 1)[0]
                completions.append(Completion(text.strip(), FinishReason(row.finish_reason), len(row.tokens)))
        return completions

    def _load(self, target: SampleTarget) -> tuple[Any, Any]:
        key = str(Path(target.adapter_dir).resolve())
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            check_adapter(target)
            model_dir = self._base_model_dir(target)
            tokenizer = load_tokenizer(model_dir)
            model = self._load_model(model_dir, target)
            self._loaded[key] = (model, tokenizer)
            while len(self._loaded) > _MAX_LOADED:
                self._loaded.popitem(last=False)
            return model, tokenizer

    def _base_model_dir(self, target: SampleTarget) -> Path:
        # By name, as the trainer found it: the same conversion when this worker shares its cache.
        return materialize_base_model(target.base_model, self.cache_dir)

    def _load_model(self, model_dir: Path, target: SampleTarget) -> Any:
        # On CPU the adapter is merged into a 16/32-bit base: a merged model decodes faster than
        # the nf4 base it was trained on (the QLoRA paper merges into 16-bit too). bf16 is taken
        # where the CPU multiplies it in hardware: AMX (3-5x the fp32 matmul throughput measured on a
        # 2-core Xeon at batch 32-128) or AVX512-BF16 (1.8x on a 2-core AMD EPYC at batch 64);
        # elsewhere fp32, where bf16 is emulated and slow.
        # On CUDA the base loads as trained, so a QLoRA job's memory budget also holds for sampling.
        if self.device.startswith("cuda"):
            model = PeftModel.from_pretrained(load_model(model_dir, target.quantization, self.device), str(target.adapter_dir))
            return model.eval()
        base = load_model(model_dir, "none", self.device, dtype=_cpu_sampling_dtype())
        return PeftModel.from_pretrained(base, str(target.adapter_dir)).merge_and_unload().eval()


def _end_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The tokenizer's end token and any the model's generation config ends on."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(i for i in ids if i is not None)


def _cpu_sampling_dtype() -> torch.dtype:
    in_hardware = (getattr(torch.cpu, name, lambda: False)() for name in
                   ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return torch.bfloat16 if any(in_hardware) else torch.float32


def _free_memory(device: str) -> int:
    """Bytes free for new tensors: the GPU's free memory, or MemAvailable of the machine."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return free
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
