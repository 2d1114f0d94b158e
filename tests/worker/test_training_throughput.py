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
