"""HFTrainer and HFSampler on the real bundled model: QLoRA for a few steps, then sampling."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.domain.hyperparameters import Hyperparameters
from app.domain.prompts import default_prompt_set
from tests.conftest import EXAMPLE_CSV
from app.domain.sampling import FinishReason, SamplingParams
from app.settings import Settings
from worker.sampling import SAMPLERS, SampleRequest, SampleTarget, build_sampler
from worker.training import TRAINERS, TrainEvent, TrainResult, TrainSpec, get_trainer
from worker.training.hf import build_configs, tokenize_examples

pytestmark = pytest.mark.slow

BASE = "smollm2-135m-instruct"


def examples(count: int) -> list[list[dict]]:
    """Chat examples from the illustrative data set, both labels."""
    with EXAMPLE_CSV.open() as f:
        rows = list(csv.DictReader(f))[:count]
    rng, prompt_set = random.Random(0), default_prompt_set()
    return [
        prompt_set.training_messages("impaired" if r["label"] == "1" else "control", r["text"], rng) for r in rows
    ]


def tiny_hyperparameters(**overrides) -> Hyperparameters:
    values = dict(lora_r=2, lora_alpha=4, max_steps=3, batch_size=2, max_seq_length=256, learning_rate=1e-3)
    return Hyperparameters(**{**values, **overrides})


def spec_for(tmp: Path, cache_dir: Path, **overrides) -> TrainSpec:
    values = dict(
        base_model=BASE, method="qlora", hyperparameters=tiny_hyperparameters(), seed=0,
        output_dir=tmp, cache_dir=cache_dir,
    )
    return TrainSpec(**{**values, **overrides})


@dataclass
class Run:
    result: TrainResult
    events: list[TrainEvent]
    spec: TrainSpec


def train(spec: TrainSpec, should_stop=lambda: False, eval_count: int = 2) -> Run:
    events: list[TrainEvent] = []
    data = examples(8 + eval_count)
    result = get_trainer(spec.method).train(spec, data[:8], data[8:], events.append, should_stop)
    return Run(result, events, spec)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Run:
    return train(spec_for(tmp_path_factory.mktemp("qlora"), cache_dir))


class TestConfigs:
    def test_qlora_maps_to_nf4_double_quant_and_cpu_fallbacks(self, tmp_path, cache_dir):
        configs = build_configs(spec_for(tmp_path, cache_dir), approx_params=135_000_000, device="cpu")
        assert configs.quantization.bnb_4bit_quant_type == "nf4"
        assert configs.quantization.bnb_4bit_use_double_quant
        assert configs.lora.r == 2 and configs.lora.lora_alpha == 4
        assert configs.lora.target_modules == "all-linear"
        assert configs.sft.completion_only_loss and configs.sft.max_length == 256
        assert configs.sft.optim == "adamw_torch" and not configs.sft.fp16 and not configs.sft.bf16
        assert any("paged_adamw_32bit" in f for f in configs.fallbacks)
        assert any("fp16" in f for f in configs.fallbacks)

    def test_lora_has_no_quantization_and_large_models_adapt_attention(self, tmp_path, cache_dir):
        configs = build_configs(spec_for(tmp_path, cache_dir, method="lora"), approx_params=70_000_000_000, device="cpu")
        assert configs.quantization is None
        assert set(configs.lora.target_modules) == {"q_proj", "k_proj", "v_proj"}

    def test_registry(self):
        assert set(TRAINERS) == {"qlora", "lora"} and set(SAMPLERS) == {"hf", "vllm", "openai"}
        with pytest.raises(ValueError, match="known: lora, qlora"):
            get_trainer("nope")


class TestTokenizedExamples:
    def test_loss_only_on_the_completion_which_ends_with_eos(self, cache_dir):
        from worker.models import load_tokenizer, materialize_base_model
        from worker.prompt_format import encode_prompt, render_prompt

        tokenizer = load_tokenizer(materialize_base_model(BASE, cache_dir))
        messages = examples(1)[0]
        row = tokenize_examples(tokenizer, [messages])[0]
        prompt_ids = encode_prompt(tokenizer, render_prompt(tokenizer, messages[:-1]))
        assert row["input_ids"][: len(prompt_ids)] == prompt_ids
        assert row["completion_mask"] == [0] * len(prompt_ids) + [1] * (len(row["input_ids"]) - len(prompt_ids))
        assert row["input_ids"][-1] == tokenizer.eos_token_id


class TestQLoRATraining:
    def test_events_in_order(self, trained):
        kinds = [e.kind for e in trained.events]
        assert kinds[0] == "fallback"
        assert kinds.index("metrics") > max(i for i, k in enumerate(kinds) if k == "fallback")
        metrics = [e for e in trained.events if e.kind == "metrics"]
        assert [e.step for e in metrics] == [1, 2, 3]
        assert all(e.total_steps == 3 and e.loss > 0 and e.epoch > 0 for e in metrics)
        assert kinds[-1] == "message"

    def test_eval_and_checkpoint_at_epoch_end(self, trained):
        evals = [e for e in trained.events if e.kind == "eval"]
        checkpoints = [e for e in trained.events if e.kind == "checkpoint"]
        assert evals and evals[-1].eval_loss > 0
        assert [e.step for e in checkpoints] == [3]
        path = Path(checkpoints[0].path)
        assert path.parent == trained.spec.output_dir / "checkpoints"
        assert (path / "adapter_model.safetensors").is_file() and not (path / "model.safetensors").exists()

    def test_adapter_loads_with_peft(self, trained, cache_dir):
        from peft import PeftModel

        from worker.models import load_model, materialize_base_model

        adapter_dir = trained.result.adapter_dir
        assert adapter_dir == trained.spec.output_dir / "adapter"
        assert not trained.result.stopped and trained.result.metrics["global_step"] == 3
        manifest = json.loads((adapter_dir / "synthaug.json").read_text())
        assert (manifest["base_model"], manifest["method"], manifest["quantization"]) == (BASE, "qlora", "nf4")
        base = load_model(materialize_base_model(BASE, cache_dir), "none")
        model = PeftModel.from_pretrained(base, adapter_dir)
        assert any("lora_A" in name for name, _ in model.named_parameters())

    def test_resume_from_checkpoint_continues_the_step_count(self, trained, tmp_path, cache_dir):
        checkpoint = Path(next(e.path for e in trained.events if e.kind == "checkpoint"))
        spec = spec_for(tmp_path, cache_dir, hyperparameters=tiny_hyperparameters(max_steps=4), resume_from=checkpoint)
        run = train(spec, eval_count=0)
        assert [e.step for e in run.events if e.kind == "metrics"] == [4]
        assert run.result.metrics["global_step"] == 4


class TestCancel:
    def test_should_stop_ends_training_after_the_current_step(self, tmp_path, cache_dir):
        spec = spec_for(tmp_path, cache_dir, hyperparameters=tiny_hyperparameters(max_steps=20))
        run = train(spec, should_stop=lambda: True)
        assert run.result.stopped
        assert [e.step for e in run.events if e.kind == "metrics"] == [1]
        assert not [e for e in run.events if e.kind in ("checkpoint", "eval")]
        # A stopped run saves no adapter: none is registered, and after a takeover the job's directory
        # is another worker's.
        assert run.result.adapter_dir is None and not (spec.output_dir / "adapter").exists()
        assert run.events[-1].message == "training stopped at step 1; no adapter saved"


class TestSampling:
    def sample(self, trained, cache_dir, seeds=(7, 8, 9), label="impaired", **params) -> list:
        target = SampleTarget("ad_test", trained.result.adapter_dir, BASE, "nf4")
        values = dict(max_tokens=12, seed=7, temperature=1.0, top_p=0.95, top_k=40)
        messages = default_prompt_set().inference_messages(label)
        settings = Settings(cache_dir=cache_dir)
        return build_sampler("hf", settings).sample(
            target, [SampleRequest.of(messages, seed) for seed in seeds], SamplingParams(**{**values, **params})
        )

    def test_one_completion_per_request_with_how_it_ended(self, trained, cache_dir):
        completions = self.sample(trained, cache_dir)
        assert len(completions) == 3
        assert all(isinstance(c.text, str) and c.text and c.text == c.text.strip() for c in completions)
        assert all(c.finish_reason in (FinishReason.STOP, FinishReason.LENGTH) and 0 < c.tokens <= 12 for c in completions)
        assert all(c.tokens == 12 for c in completions if c.finish_reason == FinishReason.LENGTH)
        assert "<|im_end|>" not in "".join(c.text for c in completions)

    def test_a_samples_text_is_a_function_of_its_seed(self, trained, cache_dir):
        first = self.sample(trained, cache_dir, seeds=(7, 8, 7))
        assert first[0] == first[2] and first[0].text != first[1].text
        assert self.sample(trained, cache_dir, seeds=(7, 8, 7)) == first

    def test_stop_strings_end_a_sample_before_them(self, trained, cache_dir):
        completions = self.sample(trained, cache_dir, seeds=range(4), stop=["e"], max_tokens=24)
        assert all("e" not in c.text for c in completions)
        assert any(c.finish_reason == FinishReason.STOP for c in completions)

    def test_batch_size_comes_from_memory_within_the_cap(self, trained, cache_dir):
        target = SampleTarget("ad_test", trained.result.adapter_dir, BASE, "nf4")
        sampler = build_sampler("hf", Settings(cache_dir=cache_dir, hf_max_batch_size=48))
        assert sampler.chunk_size(target, SamplingParams(max_tokens=256)) == 48
        tiny = build_sampler("hf", Settings(cache_dir=cache_dir, hf_memory_fraction=1e-5))
        assert 1 <= tiny.chunk_size(target, SamplingParams(max_tokens=8192)) < 48
        # The configured budgets bound the batch whatever the free memory: 256 prompt + 256 tokens a row.
        budget = build_sampler("hf", Settings(cache_dir=cache_dir, max_batch_tokens=4096))
        assert budget.chunk_size(target, SamplingParams(max_tokens=256)) == 4096 // 512
        kv = build_sampler("hf", Settings(cache_dir=cache_dir, hf_max_kv_cache_bytes=200 * 1024**2))
        assert 1 <= kv.chunk_size(target, SamplingParams(max_tokens=256)) <= 200 * 1024**2 // (512 * 23_040)
