from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.domain.hyperparameters import Hyperparameters
from app.schemas.common import ORMModel


class FinetuneJobCreate(BaseModel):
    dataset_id: str
    base_model: str | None = Field(
        None, description="Registry name, local HF dir or cached hub id; default: the server's default."
    )
    method: Literal["qlora", "lora"] = "qlora"
    prompt_set_id: str = "ps_default"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


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
    path: str
    created_at: datetime
