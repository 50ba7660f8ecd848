"""GET /v1/audits/compare: two or more finished audits side by side, figure by figure."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.schemas.reports import VerdictLabel

# Audits one comparison may name: each is read whole (results and sections) to answer.
MAX_COMPARED_AUDITS = 20
# A value of one figure: a number, a yes/no, or null (the audit has no such value, or the engine had NaN).
Value = bool | int | float | None


class ComparedAudit(BaseModel):
    id: str
    name: str | None
    model_id: str
    dataset_id: str
    created_at: datetime
    checks: list[str]
    verdict: str | None = Field(description="The verdict in plain words.")
    verdict_code: str | None = Field(description="sbengine.metrics.classify's category.")
    verdict_label: VerdictLabel
    verdict_changed: bool = Field(
        description="Whether the verdict code differs from the first audit's (false for the first)."
    )
    report_url: str = Field(description="This audit's HTML report.")


class ComparisonRow(BaseModel):
    """One figure: ``metric`` (its path in the check's results), ``block`` and ``statistic``, as the CSV
    export names it (docs/api.md, "Results as CSV")."""

    metric: str = Field(description="The figure's path in the check's results, e.g. 's_randomized_auc'.")
    block: str | None = Field(
        description="The block or group the figure is about (feature dependence, shares); null for the model."
    )
    statistic: Literal["value", "mean", "std"] = Field(
        description="'mean' and 'std' over the repeats of a repeated measurement, else 'value'."
    )
    values: list[Value] = Field(
        description="One per audit, in the order of `audits`; null where an audit has no such figure."
    )
    deltas: list[int | float | None] = Field(
        description="values[i] - values[0] for each audit (0 for the first); null where either value is "
        "not a number."
    )
    changed: bool = Field(description="Whether any audit's value differs from the first audit's.")


class CheckComparison(BaseModel):
    check: str
    title: str = Field(description="The check's title in the reports.")
    rows: list[ComparisonRow]


class AuditComparison(BaseModel):
    audits: list[ComparedAudit] = Field(description="In the order requested; the first is the baseline.")
    verdict_changed: bool = Field(description="Whether any audit's verdict code differs from the first's.")
    checks: list[CheckComparison] = Field(
        description="Every check any of the audits ran, in the order they ran; a check an audit did not "
        "run has null values for it."
    )
    report_url: str = Field(description="This comparison as an HTML page.")
