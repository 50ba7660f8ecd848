"""Jobs: the unit of work behind every dataset, model and audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field, computed_field

from service.schemas.common import JobState, Page, ReadModel


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
    estimate: dict[str, Any] | None = Field(
        default=None,
        description="The job's estimated peak memory (memory_bytes: bytes of the job process) and work "
        "(multiply-adds), with parts saying what each is made of; checked against the server's job budget "
        "before it was queued. Null for uploads and for jobs queued before budgets existed.",
    )
    waiting_for: list[str] = Field(
        default=[],
        description="While `waiting`: the inputs (dataset and model ids) not ready yet; the job is queued "
        "when they all are, and fails naming the input if one fails or is canceled. Empty otherwise.",
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

    @computed_field(  # type: ignore[prop-decorator]  # pydantic's documented form, which mypy rejects
        description="Seconds left, extrapolated from the time so far: only while running with progress "
        "between 1% and 100% (earlier the rate says little)."
    )
    @property
    def eta_seconds(self) -> float | None:
        progress = self.progress
        if self.state != "running" or self.started_at is None or not 0.01 < progress < 1:
            return None
        started = self.started_at if self.started_at.tzinfo else self.started_at.replace(tzinfo=UTC)
        elapsed = max(0.0, (datetime.now(UTC) - started).total_seconds())
        return elapsed * (1 - progress) / progress


class JobPage(Page[JobRead]):
    """A page of jobs, newest first."""
