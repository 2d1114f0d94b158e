from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.domain.prompts import DEFAULT_INSTRUCTION, LabelPrompts, PromptSet
from app.schemas.common import ORMModel


class LabelPromptsIn(BaseModel):
    wording: str = Field(..., min_length=1, description="How the label is written, in training and sampling alike.")
    training_roles: list[str] = Field(..., min_length=1, description="System-role variations used in training.")
    inference_prompt: str = Field(..., min_length=1, description="Neutral system prompt used when sampling.")


class PromptSetCreate(BaseModel):
    name: str = Field(..., min_length=1, max_length=200)
    instruction: str = Field(DEFAULT_INSTRUCTION, description="User turn; must contain {wording}.")
    labels: dict[str, LabelPromptsIn]

    def to_domain(self) -> PromptSet:
        return PromptSet(
            name=self.name,
            instruction=self.instruction,
            labels={
                label: LabelPrompts(p.wording, tuple(p.training_roles), p.inference_prompt)
                for label, p in self.labels.items()
            },
        )


class PromptSetPublic(ORMModel):
    id: str
    name: str
    spec: dict
    created_at: datetime
