"""Pieces every resource schema shares."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

ResourceStatus = Literal["waiting", "queued", "running", "ready", "failed", "canceled"]
JobState = Literal["waiting", "queued", "running", "succeeded", "failed", "canceling", "canceled"]

# Seeds are stored in 64-bit columns and fed to numpy/torch generators.
Seed = Field(default=0, ge=0, le=2**63 - 1, description="Random seed; the same seed reproduces the result.")
Name = Field(default=None, min_length=1, max_length=200, description="A label of your choice.")


class StrictModel(BaseModel):
    """Request bodies: unknown fields are errors, no silent type coercion ("5" is not 5), finite floats."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ArtifactRead(ReadModel):
    id: str
    kind: str = Field(description="What the file holds, e.g. 'weights', 'arrays', 'results'.")
    content_type: str
    size: int
    sha256: str
    filename: str
    url: str = Field(description="Download path: GET it with your API key.")
    created_at: datetime


class ResourceRead(ReadModel):
    id: str
    name: str | None
    status: ResourceStatus
    job_id: str
    error: str | None = Field(description="Why the job failed, when status is 'failed'.")
    artifacts: list[ArtifactRead] = []
    created_at: datetime
    updated_at: datetime


class Page(BaseModel, Generic[T]):
    """A page of a listing, newest first. Routes answer a named subclass (``DatasetPage``, ...): pydantic
    names the schema of a bare ``Page[DatasetRead]`` ``Page_DatasetRead_``, which generated clients carry
    as an awkward type name."""

    data: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page."
    )
