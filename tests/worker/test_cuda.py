"""The CUDA-only paths (nf4 on the GPU, paged AdamW, mixed precision); skipped where no GPU is.

A tiny randomly initialised Llama stands in for the base model (the bundled GGUF is the CPU
default); it has the real tokenizer, so prompts render exactly as in production.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from app.domain.hyperparameters import Hyperparameters
from app.domain.prompts import default_prompt_set

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer_dir = os.environ.get("SYNTHAUG_TEST_TOKENIZER_DIR")
    if tokenizer_dir is None:
        from worker.models import materialize_base_model

        tokenizer_dir = materialize_base_model("smollm2-135m-instruct", Path(".cache").resolve())
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def examples() -> list[list[dict[str, str]]]:
    import random

    prompt_set, rng = default_prompt_set(), random.Random(0)
    texts = {"control": "The boy is taking cookies while the sink overflows.",
             "impaired": "Uh the boy... the the cookie, um, thing."}
    return [prompt_set.training_messages(label, text, rng) for label, text in texts.items() for _ in range(4)]


def test_qlora_on_cuda_keeps_paged_adamw_and_mixed_precision(tiny_model_dir, tmp_path):
    from worker.sampling.base import SampleTarget, SamplingParams
    from worker.sampling.hf import HFSampler
    from worker.training.base import TrainSpec
    from worker.training.hf import HFTrainer, build_configs

    hp = Hyperparameters(lora_r=4, lora_alpha=8, max_steps=3, batch_size=2, max_seq_length=96)
    spec = TrainSpec(base_model=str(tiny_model_dir), method="qlora", hyperparameters=hp, seed=0,
                     output_dir=tmp_path / "job", cache_dir=tmp_path / "cache")
    configs = build_configs(spec, approx_params=10_000_000, device="cuda")
    assert configs.sft.optim == "paged_adamw_32bit"
    assert configs.sft.bf16 or configs.sft.fp16
    assert configs.quantization.bnb_4bit_quant_type == "nf4" and configs.quantization.bnb_4bit_use_double_quant

    events = []
    result = HFTrainer().train(spec, examples(), examples()[:2], events.append, lambda: False)
    assert not result.stopped
    fallbacks = [e.message for e in events if e.kind == "fallback"]
    assert not any("needs CUDA" in m for m in fallbacks), fallbacks
    assert [e.step for e in events if e.kind == "metrics"][-1] == 3
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()

    texts: list[tuple[int, str]] = []
    params = SamplingParams(n=4, temperature=0.9, top_p=0.95, top_k=40, max_tokens=16, seed=3, batch_size=2)
    sampler = HFSampler(cache_dir=tmp_path / "cache", device="cuda")
    target = SampleTarget(result.adapter_dir, str(tiny_model_dir), "nf4")
    sampler.sample(target, default_prompt_set().inference_messages("impaired"), params, on_batch=texts.extend)
    again: list[tuple[int, str]] = []
    sampler.sample(target, default_prompt_set().inference_messages("impaired"), params, on_batch=again.extend)
    assert [i for i, _ in texts] == [0, 1, 2, 3]
    assert texts == again
