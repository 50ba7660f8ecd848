"""The shapes of the API's JSON, as TypedDicts (the documented fields; a newer server may add more).

Timestamps are ISO 8601 strings exactly as the server sent them; free-form objects (a dataset's spec, an
audit's results) are ``dict[str, Any]``. See the OpenAPI document at ``/openapi.json`` for every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

JobState = Literal["waiting", "queued", "running", "succeeded", "failed", "canceling", "canceled"]
ResourceStatus = Literal["waiting", "queued", "running", "ready", "failed", "canceled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


class Artifact(TypedDict):
    id: str
    kind: str
    content_type: str
    size: int
    sha256: str
    filename: str
    url: str
    created_at: str


class JobDetail(TypedDict, total=False):
    step: int | None
    total: int | None
    metrics: dict[str, Any]


class Job(TypedDict):
    id: str
    kind: str
    state: JobState
    progress: float
    stage: str | None
    detail: JobDetail | None
    waiting_for: NotRequired[list[str]]  # while waiting: the inputs not ready yet (servers since job deps)
    attempt: int
    max_attempts: int
    error: str | None
    resource_type: str
    resource_id: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str
    eta_seconds: float | None


class _Resource(TypedDict):
    id: str
    name: str | None
    status: ResourceStatus
    job_id: str
    error: str | None
    artifacts: list[Artifact]
    created_at: str
    updated_at: str


class FeatureBlock(TypedDict):
    name: str
    kind: str
    indices: list[int]
    bayes_accuracy: float | None
    params: dict[str, Any]


class Dataset(_Resource):
    spec: dict[str, Any]
    input_shape: list[int] | None
    num_classes: int | None
    blocks: list[FeatureBlock] | None
    simple_blocks: list[int] | None
    bayes_accuracy: dict[str, Any] | None
    sizes: dict[str, int] | None
    rotated: bool | None
    seed: int | None
    classes: list[str] | None
    feature_names: list[str] | None


class Model(_Resource):
    dataset_id: str
    architecture: dict[str, Any]
    training: dict[str, Any]
    ensemble_size: int
    seed: int
    input_shape: list[int] | None
    num_classes: int | None
    metrics: dict[str, float] | None
    result: dict[str, Any] | None


class MlflowRun(TypedDict):
    """An audit's MLflow run (servers with SBAUDIT_MLFLOW_TRACKING_URI): where it goes; once the audit is
    ready its ids, or ``error`` when it could not be logged (the audit itself succeeded)."""

    experiment: str
    run_name: str
    run_id: str | None
    experiment_id: str | None
    run_url: str | None
    error: str | None


class Audit(_Resource):
    model_id: str
    model_ids: list[str] | None
    ensemble_size: int
    combine: str | None
    dataset_id: str
    checks: list[str]
    options: dict[str, dict[str, Any]]
    simple_blocks: list[int] | None
    split: str
    repeats: int
    seed: int
    verdict_thresholds: dict[str, float] | None
    verdict: str | None
    verdict_code: str | None
    results: dict[str, Any] | None
    mlflow: MlflowRun | None


class ComparedAudit(TypedDict):
    id: str
    name: str | None
    model_id: str
    dataset_id: str
    created_at: str
    checks: list[str]
    verdict: str | None
    verdict_code: str | None
    verdict_label: str
    verdict_changed: bool
    report_url: str


class ComparisonRow(TypedDict):
    metric: str
    block: str | None
    statistic: Literal["value", "mean", "std"]
    values: list[bool | int | float | None]
    deltas: list[int | float | None]
    changed: bool


class CheckComparison(TypedDict):
    check: str
    title: str
    rows: list[ComparisonRow]


class AuditComparison(TypedDict):
    """``GET /v1/audits/compare``: ``audits`` in the order asked (the first is the baseline of the deltas)."""

    audits: list[ComparedAudit]
    verdict_changed: bool
    checks: list[CheckComparison]
    report_url: str


@dataclass(frozen=True)
class JobEvent:
    """One step of a job's progress: ``event`` is "job" (the job changed) or "end" (it finished; ``job``
    is its final state)."""

    event: Literal["job", "end"]
    job: Job


R = TypeVar("R")


@dataclass(frozen=True)
class Upload(Generic[R]):
    """An uploaded dataset or model; ``created`` is False when the same file and declaration were already
    uploaded (the server answers with the existing resource)."""

    resource: R
    created: bool
