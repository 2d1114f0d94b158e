from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from app.domain.hyperparameters import Hyperparameters
from app.domain.openai_finetune import OpenAIHyperparameters
from app.schemas.common import ORMModel


class FinetuneJobCreate(BaseModel):
    dataset_id: str
    base_model: str | None = Field(
        None, description="qlora/lora: registry name, local HF dir or cached hub id (default: the server's "
        "default). openai: an allowed OpenAI snapshot (default: the first of SYNTHAUG_OPENAI_MODELS)."
    )
    method: Literal["qlora", "lora", "openai"] = "qlora"
    prompt_set_id: str = "ps_default"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    hyperparameters: Hyperparameters | OpenAIHyperparameters = Field(
        default_factory=Hyperparameters,
        description="qlora/lora: LoRA, quantization and SFT settings. openai: n_epochs, batch_size, "
        "learning_rate_multiplier (each a number or \"auto\"), suffix, metadata.",
    )

    @model_validator(mode="before")
    @classmethod
    def _hyperparameters_of_the_method(cls, data):
        """Validate hyperparameters as the method's own kind (each refuses the other's keys)."""
        if isinstance(data, dict):
            kind = OpenAIHyperparameters if data.get("method") == "openai" else Hyperparameters
            try:
                data = {**data, "hyperparameters": kind.model_validate(data.get("hyperparameters") or {})}
            except ValidationError as exc:
                problems = "; ".join(f"hyperparameters.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                     for e in exc.errors())
                raise PydanticCustomError("hyperparameters", "{problems} (method {method})",
                                          {"problems": problems, "method": data.get("method", "qlora")}) from None
        return data


class FinetuneJobPublic(ORMModel):
    id: str
    dataset_id: str
    prompt_set_id: str
    base_model: str
    method: str
    hyperparameters: dict[str, Any]
    seed: int
    status: str
    attempts: int
    cancel_requested: bool
    step: int
    total_steps: int | None
    eta_seconds: float | None
    metrics: dict[str, Any]
    remote: dict[str, Any] = Field(
        default_factory=dict,
        description="openai: the remote job and file ids, its status, trained tokens, error, the pre-flight "
        "summary (token counts, billed-token estimate) and a requested pause or resume.",
    )
    error: str | None
    adapter_id: str | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobEventPublic(ORMModel):
    id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime


class CheckpointPublic(ORMModel):
    id: str
    step: int
    epoch: float | None
    remote_model: str | None = Field(
        None, description="openai: the checkpoint's model id (also an adapter). qlora/lora: none; checkpoints stay "
        "on the server, which never shows its paths.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="openai: the checkpoint's losses and accuracies.")
    created_at: datetime
