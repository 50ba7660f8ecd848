"""Audit requests: which checks to run on which model, against which dataset, with which S."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from service.schemas.common import Name, ResourceRead, Seed, StrictModel

# Later parts add "ensemble", "pgd", "uap", "generalization".
AUDIT_CHECKS = ("randomization", "feature_dependence")
CheckName = Literal["randomization", "feature_dependence"]


class AuditCreate(StrictModel):
    model_id: str = Field(min_length=1, max_length=40)
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="Default: the dataset the model was trained on.",
    )
    checks: list[CheckName] = Field(default_factory=lambda: ["randomization"], min_length=1, max_length=16)
    simple_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1, description="Block indices forming S (default: the dataset's)."
    )
    split: Literal["test", "val", "train"] = "test"
    repeats: int = Field(default=5, ge=1, description="Independent permutations averaged per figure.")
    seed: int = Seed
    name: str | None = Name

    @field_validator("checks", "simple_blocks")
    @classmethod
    def _no_repeats(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat an entry")
        return value


class AuditRead(ResourceRead):
    model_id: str
    dataset_id: str
    checks: list[str]
    simple_blocks: list[int] | None
    split: str
    repeats: int
    seed: int
    verdict: str | None = None
    verdict_code: str | None = None
    results: dict[str, Any] | None = None
