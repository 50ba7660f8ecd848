"""Jobs: the unit of work behind every dataset, model and audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from service.schemas.common import JobState, ReadModel


class JobRead(ReadModel):
    id: str
    kind: str = Field(
        description="generate_dataset, train_model, run_audit; upload_dataset / upload_model (validated "
        "within the upload request, so born succeeded)."
    )
    state: JobState
    progress: float = Field(description="0 to 1.")
    stage: str | None = None
    detail: dict[str, Any] | None = Field(
        default=None, description="Latest progress event: step, total, metrics."
    )
    attempt: int = Field(description="1 on the first run; +1 each time a lost worker's job is re-queued.")
    max_attempts: int
    error: str | None
    resource_type: str
    resource_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
