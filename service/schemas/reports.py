"""report.json: an audit report for machines (the HTML report shows the same content)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.schemas.audits import AuditRead, VerdictCode
from service.schemas.datasets import DatasetRead
from service.schemas.models import ModelRead

VerdictLabel = Literal[
    "simplicity_biased",
    "not_simplicity_biased",
    "inconclusive",
    "waiting",
    "queued",
    "running",
    "failed",
    "canceled",
]


class FigureRead(BaseModel):
    name: str = Field(description="The artifact kind, e.g. 'logit_histograms', 'pgd_block_share'.")
    title: str
    caption: str = Field(description="How to read the figure.")
    artifact_id: str
    url: str = Field(description="Download path of the PNG (GET it with your API key).")
    size: int


class ReproduceRead(BaseModel):
    """The request bodies that rerun this audit from nothing ($DATASET_ID / $MODEL_ID: the new ids)."""

    dataset: dict[str, Any] | None = Field(
        description="POST /v1/datasets body; null for an uploaded dataset."
    )
    model: dict[str, Any] | None = Field(description="POST /v1/models body; null for an uploaded model.")
    audit: dict[str, Any] = Field(description="POST /v1/audits body.")
    curl: list[str] = Field(description="Shell steps with curl and jq, in order.")
    cli: list[str] = Field(description="The same with the sbaudit command-line client.")
    notes: list[str] = Field(description="What the commands cannot do for you (uploads).")


class ReportRead(BaseModel):
    audit: AuditRead
    dataset: DatasetRead | None = Field(description="Null if the dataset was deleted.")
    model: ModelRead | None = Field(description="Null if the model was deleted.")
    verdict_label: VerdictLabel = Field(
        description="The verdict in one word: simplicity_biased (relies mostly or only on S), "
        "not_simplicity_biased, inconclusive (not predictive), or the audit's state while it has none."
    )
    verdict: str | None = Field(description="The verdict in plain words.")
    verdict_code: VerdictCode | None = Field(description="sbengine.metrics.classify's category.")
    results: dict[str, Any] | None
    figures: list[FigureRead] = Field(description="The audit's plots in reading order.")
    training_curves: FigureRead | None = Field(description="The model's training curves.")
    environment: dict[str, Any] | None = Field(
        description="Versions and device the audit ran with, when the worker recorded them."
    )
    api_version: str
    report_url: str = Field(description="The HTML report.")
    job_url: str = Field(description="The audit's job (progress, error).")
    reproduce: ReproduceRead
