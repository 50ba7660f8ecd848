"""GET /v1/usage: what an owner stores, against their quota."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ResourceCounts(BaseModel):
    datasets: int
    models: int
    audits: int
    artifacts: int
    active_jobs: int = Field(description="Jobs queued or running.")


class UsageRead(BaseModel):
    owner: str
    bytes_used: int = Field(
        description="Total size of the distinct files your artifacts reference (identical files count once)."
    )
    quota_bytes: int | None = Field(description="SBAUDIT_OWNER_QUOTA_BYTES; null when unlimited.")
    bytes_left: int | None = Field(description="quota_bytes - bytes_used (at least 0); null when unlimited.")
    counts: ResourceCounts
