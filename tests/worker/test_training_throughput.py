"""Training throughput: the metrics events of worker/training/hf.py carry num_tokens and tokens/s."""

from __future__ import annotations

import time

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from worker.training import TrainEvent
from worker.training.hf import _EventCallback


def log(callback: _EventCallback, step: int, **logs: float) -> None:
    state = TrainerState(global_step=step, max_steps=10, epoch=step / 10)
    callback.on_log(None, state, TrainerControl(), logs={"loss": 2.0, "learning_rate": 1e-3, **logs})


class TestTokensPerSecond:
    def test_the_delta_of_num_tokens_over_the_time_between_two_logs(self):
        events: list[TrainEvent] = []
        callback = _EventCallback(events.append, lambda: False)
        log(callback, 1, num_tokens=512.0)
        started = time.monotonic()
        time.sleep(0.2)
        log(callback, 2, num_tokens=1536.0)
        elapsed = time.monotonic() - started
        first, second = events
        assert first.data["num_tokens"] == 512 and "tokens_per_second" not in first.data
        assert second.data["num_tokens"] == 1536
        assert 1024 / (elapsed + 0.05) < second.data["tokens_per_second"] <= 1024 / 0.2

    def test_evaluation_and_checkpoint_time_is_not_training_time(self, tmp_path):
        events: list[TrainEvent] = []
        callback = _EventCallback(events.append, lambda: False)
        state, control = TrainerState(global_step=1, max_steps=10), TrainerControl()
        log(callback, 1, num_tokens=1000.0)
        time.sleep(0.3)  # evaluating
        callback.on_evaluate(None, state, control)
        time.sleep(0.3)  # saving
        callback.on_save(TrainingArguments(output_dir=str(tmp_path), report_to="none"), state, control)
        log(callback, 2, num_tokens=2000.0)
        assert events[-1].data["tokens_per_second"] > 1000 / 0.3

    def test_nothing_without_num_tokens(self):
        events: list[TrainEvent] = []
        callback = _EventCallback(events.append, lambda: False)
        log(callback, 1)
        log(callback, 2)
        assert all(set(event.data) == {"grad_norm"} for event in events)


@pytest.mark.slow
class TestRealTraining:
    def test_sft_trainer_logs_num_tokens_and_every_later_log_has_a_rate(self, tmp_path, cache_dir):
        from tests.worker.test_hf_backends import spec_for, tiny_hyperparameters, train

        run = train(spec_for(tmp_path, cache_dir, hyperparameters=tiny_hyperparameters(max_steps=3)), eval_count=0)
        metrics = [event for event in run.events if event.kind == "metrics"]
        assert [event.step for event in metrics] == [1, 2, 3]
        tokens = [event.data["num_tokens"] for event in metrics]
        assert tokens[0] > 0 and tokens == sorted(set(tokens))
        assert "tokens_per_second" not in metrics[0].data
        assert all(event.data["tokens_per_second"] > 0 for event in metrics[1:])


class TestLessWorkPerToken:
    def test_batches_are_grouped_by_length(self, tmp_path):
        from app.domain.hyperparameters import Hyperparameters
        from worker.training.base import TrainSpec
        from worker.training.hf import build_configs

        spec = TrainSpec("smollm2-135m-instruct", "qlora", Hyperparameters(), 0, tmp_path, tmp_path)
        assert build_configs(spec, approx_params=135_000_000, device="cpu").sft.train_sampling_strategy == (
            "group_by_length")

    def test_the_lm_head_scores_only_labelled_positions_on_cpu_with_the_same_loss_and_gradients(self, monkeypatch):
        import torch
        import trl.trainer.utils as trl_utils
        from transformers import LlamaConfig, LlamaForCausalLM

        from worker.training.hf import _score_labelled_positions_only

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=4, num_key_value_heads=2))
        trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        ids = torch.randint(0, 300, (2, 12))
        labels = ids.clone()
        labels[:, :5] = -100  # the prompt
        labels[1, 9:] = -100  # padding
        mask = (labels != -100) | (torch.arange(12) < 5)
        scored: list[int] = []
        head = trl_utils._ChunkedLogProbFunction.apply
        monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply",
                            lambda hidden, *rest: scored.append(hidden.shape[0]) or head(hidden, *rest))

        def loss_and_gradient():
            model.zero_grad()
            output = model(input_ids=ids, attention_mask=mask.long(), labels=labels, fused_lm_head=True)
            output.loss.backward()
            return output.loss.item(), model.model.layers[0].mlp.up_proj.weight.grad.clone(), output.entropy.detach()

        # TRL's own check, even when a training run earlier in this process installed ours (undone after).
        monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "original", trl_utils._use_triton))
        every = loss_and_gradient()
        _score_labelled_positions_only()
        labelled = loss_and_gradient()
        assert scored == [2 * 11, int((labels[:, 1:] != -100).sum())] == [22, 11]
        assert labelled[0] == pytest.approx(every[0], abs=1e-6)
        assert torch.allclose(labelled[1], every[1], atol=1e-6)
        assert torch.allclose(labelled[2], every[2], atol=1e-6)


class TestUnpackedBase:
    """QLoRA on CPU unpacks the frozen nf4 base once: the layers compute what bitsandbytes computed."""

    @pytest.fixture(scope="class")
    def nf4_model(self, cache_dir):
        from peft import prepare_model_for_kbit_training

        from worker.models import load_model, materialize_base_model

        model = load_model(materialize_base_model("smollm2-135m-instruct", cache_dir), "nf4", "cpu")
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    @staticmethod
    def loss_and_input_gradient(model) -> tuple:
        import torch

        torch.manual_seed(0)
        embeddings = torch.randn(2, 9, model.config.hidden_size, requires_grad=True)
        labels = torch.randint(0, model.config.vocab_size, (2, 9))
        loss = model(inputs_embeds=embeddings, labels=labels).loss
        loss.backward()
        return loss.detach(), embeddings.grad

    def test_a_budget_too_small_leaves_the_nf4_layers(self, nf4_model):
        import bitsandbytes as bnb

        from worker.training.hf import unpack_frozen_base

        assert unpack_frozen_base(nf4_model, 1 << 20) == 0
        assert any(isinstance(module, bnb.nn.Linear4bit) for module in nf4_model.modules())

    def test_same_loss_and_gradients_as_the_nf4_layers_then_no_nf4_layer_left(self, nf4_model):
        import bitsandbytes as bnb
        import torch

        from worker.training.hf import unpack_frozen_base

        packed = [m for m in nf4_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        before = self.loss_and_input_gradient(nf4_model)
        unpacked = unpack_frozen_base(nf4_model, 2 << 30)
        after = self.loss_and_input_gradient(nf4_model)
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in nf4_model.modules())
        assert unpacked == sum(m.in_features * m.out_features for m in packed) * 4  # fp32
        plain = [m for m in nf4_model.modules() if type(m) is torch.nn.Linear and m.weight.dtype == torch.float32]
        assert all(not p.requires_grad for m in plain for p in m.parameters())
        assert torch.allclose(after[0], before[0], rtol=0, atol=1e-6)
        assert torch.allclose(after[1], before[1], rtol=1e-5, atol=1e-8)
        assert after[1].abs().sum() > 0
