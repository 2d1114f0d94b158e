from __future__ import annotations

from datetime import datetime

from app.schemas.common import ORMModel


class AdapterPublic(ORMModel):
    id: str
    job_id: str
    prompt_set_id: str
    base_model: str
    method: str
    created_at: datetime
