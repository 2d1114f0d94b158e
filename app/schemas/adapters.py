from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.schemas.common import ORMModel


class AdapterPublic(ORMModel):
    id: str
    job_id: str
    prompt_set_id: str
    base_model: str
    method: str
    kind: str = Field(description="peft: a LoRA directory (download it); openai: an OpenAI fine-tuned model id.")
    remote_model: str | None = Field(None, description="The OpenAI model id a generation calls (kind openai).")
    checkpoint_id: str | None = Field(None, description="Set when this is an OpenAI checkpoint's model, not the final one.")
    created_at: datetime
