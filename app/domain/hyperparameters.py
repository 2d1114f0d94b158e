"""Typed fine-tuning hyperparameters, stored on the job as validated JSON.

Defaults are the original study's (LoRA r 64, alpha 16, dropout 0.1, lr 2e-4, 10 epochs, cosine,
3 % warmup, paged AdamW 32-bit, fp16). Where a device cannot honour a value (paged optimizers and
fp16 need CUDA) the trainer falls back and records the fallback as a job event.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Optimizer = Literal["paged_adamw_32bit", "adamw_torch", "paged_adamw_8bit", "sgd"]
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]


class Hyperparameters(BaseModel):
    """Fine-tuning hyperparameters; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    lora_r: int = Field(64, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(16, ge=1, le=1024, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA layers.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt. Default: all linear layers for models under 13B "
        "parameters, attention q/k/v for larger ones.",
    )
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate.")
    num_epochs: float = Field(10, gt=0.0, le=100, description="Passes over the train split.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides num_epochs)."
    )
    lr_scheduler: Scheduler = Field("cosine", description="Learning-rate schedule.")
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Share of steps spent warming up.")
    batch_size: int = Field(4, ge=1, le=256, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=256, description="Steps per optimizer update.")
    max_seq_length: int = Field(
        512, ge=16, le=32768,
        description="Tokens per training example (prompt + transcript + end token). A job whose train or "
        "validation examples are longer is refused unless allow_truncation is set.",
    )
    allow_truncation: bool = Field(
        False,
        description="Train on examples longer than max_seq_length, cut at that length. A cut example loses "
        "its end token, so the model learns less about ending a transcript.",
    )
    optimizer: Optimizer = Field("paged_adamw_32bit", description="Optimizer (paged ones need CUDA).")
    fp16: bool = Field(True, description="Mixed precision fp16 (needs CUDA).")
    weight_decay: float = Field(0.001, ge=0.0, le=1.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.3, gt=0.0, description="Gradient clipping norm.")
    eval_each_epoch: bool = Field(True, description="Evaluate loss on the validation split each epoch.")
    checkpoint_each_epoch: bool = Field(True, description="Save a checkpoint each epoch.")

    @model_validator(mode="after")
    def _check_modules(self) -> "Hyperparameters":
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules must be null (automatic) or a non-empty list")
        return self
