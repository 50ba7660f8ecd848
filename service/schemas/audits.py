"""Audit requests: which checks to run on which model (or ensemble), against which dataset, with which S.

This module is each check's schema entry: its name in ``CheckName``, its options model (in ``AuditOptions``
and ``OPTION_MODELS``; a check without options has none), what the options need from the dataset
(``CheckOptions.dataset_problems``), and whether it needs an ensemble (``NEEDS_ENSEMBLE``). They mirror the
engine's check registry (sbengine/checks/: names, option defaults, ``needs_members``) and the limits of
sbengine/attacks.py / sbengine/uap.py, which the API cannot import; tests/service/test_schema_mirror.py keeps
the two in step. Step counts and epochs are capped below the engine's own limits: those caps are what one
request may cost a worker. ``VerdictThresholds`` mirrors sbengine.metrics.VerdictThresholds (defaults and
ranges) and ``VerdictCode`` the categories of sbengine.metrics.classify, in the same way.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, field_validator, model_validator

from service.schemas.common import Name, Page, ResourceRead, Seed, StrictModel

CheckName = Literal["randomization", "feature_dependence", "generalization", "pgd", "uap", "ensemble"]
AUDIT_CHECKS: tuple[str, ...] = typing.get_args(CheckName)
# Checks that compare an ensemble with its members (the engine's ``Check.needs_members``).
NEEDS_ENSEMBLE: frozenset[str] = frozenset({"ensemble"})
# Checks that backpropagate through the model (the engine's ``Check.needs_gradients``).
NEEDS_GRADIENTS: frozenset[str] = frozenset({"pgd", "uap"})
# Checks that need S as fixed coordinates, not a per-example region (the engine's ``needs_fixed_blocks``).
NEEDS_FIXED_BLOCKS: frozenset[str] = frozenset({"pgd", "uap"})
Norm = Literal["l2", "linf"]
# sbengine.attacks.LOSSES without "targeted", which needs target labels an audit does not have.
PGDLoss = Literal["untargeted", "random_targeted", "plusone_targeted", "binary_targeted", "binary_hybrid"]
BINARY_LOSSES = ("binary_targeted", "binary_hybrid")
Combine = Literal["logits", "probs"]
SplitName = Literal["test", "val", "train"]
ModelId = Annotated[str, Field(min_length=1, max_length=40)]
MAX_STEPS = 1000
MAX_ENSEMBLE_MODELS = 32
# sbengine.metrics.classify's categories: the verdict in machine-readable form.
VerdictCode = Literal["exclusively_s", "mostly_s", "both", "mostly_sc", "exclusively_sc", "not_predictive"]


Items = TypeVar("Items", bound=list[Any] | None)


def _unique(value: Items) -> Items:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("must not repeat an entry")
    return value


class CheckOptions(StrictModel):
    """The options of one check. ``dataset_problems`` says what the dataset lacks for them, as
    ``(option, message)`` pairs (the route answers 422 naming ``body.options.<check>.<option>``)."""

    def dataset_problems(self, *, sizes: dict[str, Any], num_classes: int | None) -> list[tuple[str, str]]:
        return []


class PGDOptions(CheckOptions):
    """Instance-wise PGD on every point of ``split`` (docs/method.md §7.1)."""

    norm: Norm = "l2"
    eps: float = Field(default=0.5, gt=0, description="Budget (a fraction of the data range if relative).")
    step_size: float = Field(
        default=0.05, gt=0, description="Step (a fraction of the data range if relative)."
    )
    steps: int = Field(default=20, ge=1, le=MAX_STEPS)
    relative: bool = Field(
        default=True, description="eps and step_size are fractions of (max - min) of the data."
    )
    restarts: int = Field(default=1, ge=1, le=100)
    loss: PGDLoss = "untargeted"
    rand_eps: float = Field(default=0.0, ge=0, description="Size of the random start (absolute).")

    def dataset_problems(self, *, sizes: dict[str, Any], num_classes: int | None) -> list[tuple[str, str]]:
        if self.loss in BINARY_LOSSES and num_classes not in (None, 2):
            return [("loss", f"{self.loss!r} needs a two-class dataset; this one has {num_classes} classes")]
        return []


class UAPOptions(CheckOptions):
    """A universal adversarial perturbation fitted on ``fit_split``, evaluated on the audit's ``split``."""

    method: Literal["sgd", "svd"] = "sgd"
    norm: Norm = "l2"
    eps: float = Field(default=1.0, gt=0, description="Budget of the perturbation, in input units.")
    label_signed: bool = Field(default=True, description="Apply x + (2y - 1)·v (binary tasks), as the paper.")
    step_size: float = Field(default=0.05, gt=0, description="Step of the SGD method.")
    steps: int = Field(default=30, ge=1, le=MAX_STEPS, description="Steps per batch of the SGD method.")
    epochs: int = Field(default=2, ge=1, le=100, description="Passes over fit_split of the SGD method.")
    fit_split: SplitName = "val"

    def dataset_problems(self, *, sizes: dict[str, Any], num_classes: int | None) -> list[tuple[str, str]]:
        if self.fit_split not in sizes:
            return [("fit_split", f"the dataset has no {self.fit_split!r} split")]
        return []


DependenceMethod = Literal["random", "swap"]


def _both_methods() -> list[DependenceMethod]:
    return ["random", "swap"]


class FeatureDependenceOptions(CheckOptions):
    methods: list[DependenceMethod] = Field(default_factory=_both_methods, min_length=1)
    sample_fraction: float = Field(default=1.0, gt=0, le=1, description="Share of the split's rows used.")

    @field_validator("methods")
    @classmethod
    def _no_repeats(cls, value: list[DependenceMethod]) -> list[DependenceMethod]:
        return _unique(value)


class AuditOptions(StrictModel):
    """Options per check; a check left out runs with its defaults. Only these checks take options."""

    pgd: PGDOptions | None = None
    uap: UAPOptions | None = None
    feature_dependence: FeatureDependenceOptions | None = None


OPTION_MODELS: dict[str, type[CheckOptions]] = {
    "pgd": PGDOptions,
    "uap": UAPOptions,
    "feature_dependence": FeatureDependenceOptions,
}


class VerdictThresholds(StrictModel):
    """The numbers the verdict's rules compare with, on ROC-AUC (binary tasks) or accuracy (otherwise); the
    rules, in order, are in docs/checks.md "The verdict". Leave one out for its default."""

    min_predictive: float = Field(
        default=0.6, ge=0, le=1, description="Standard metric below this: not_predictive."
    )
    chance_margin: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="A randomized metric within chance ± this: the model no longer predicts without that "
        "part.",
    )
    unchanged_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="A randomized metric at most this below standard: the model ignores that part.",
    )
    mostly_ratio: float = Field(
        default=2.0,
        ge=1,
        le=100,
        description="mostly_s / mostly_sc: one randomization costs more than this many times the other.",
    )


class MlflowRequest(StrictModel):
    """Where this audit's MLflow run goes. The server must have a tracking server
    (SBAUDIT_MLFLOW_TRACKING_URI); with one, every audit is logged, and this object only names the place."""

    experiment: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="MLflow experiment, created if missing "
        "(default: the server's SBAUDIT_MLFLOW_EXPERIMENT).",
    )
    run_name: str | None = Field(
        default=None, min_length=1, max_length=250, description="Default: the audit's name, else its id."
    )


def _randomization_only() -> list[CheckName]:
    return ["randomization"]


class AuditCreate(StrictModel):
    """Audit one model (``model_id``; an ensemble model when it was trained with ``ensemble_size`` > 1) or
    an ensemble of separately trained models (``model_ids``). Give exactly one of the two."""

    model_id: str | None = Field(default=None, min_length=1, max_length=40)
    model_ids: list[ModelId] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_ENSEMBLE_MODELS,
        description="Audit the ensemble of these ready models (same input shape and classes).",
    )
    dataset_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        description="Default: the dataset the (first) model was trained on.",
    )
    checks: list[CheckName] = Field(default_factory=_randomization_only, min_length=1, max_length=16)
    options: AuditOptions = Field(
        default_factory=AuditOptions, description='Per-check options, e.g. {"pgd": {"eps": 0.25}}.'
    )
    combine: Combine | None = Field(
        default=None, description="How an ensemble combines its members (default 'logits'); ensembles only."
    )
    verdict_thresholds: VerdictThresholds = Field(
        default_factory=VerdictThresholds,
        description='The verdict\'s thresholds, e.g. {"chance_margin": 0.05}; '
        "the others keep their defaults.",
    )
    simple_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,  # a dataset has at most 1000 blocks (generated or uploaded)
        description="Block indices forming S (default: the dataset's).",
    )
    split: SplitName = "test"
    repeats: int = Field(default=5, ge=1, description="Independent permutations averaged per figure.")
    seed: int = Seed
    name: str | None = Name
    mlflow: MlflowRequest | None = Field(
        default=None,
        description='Log the finished audit as an MLflow run in this experiment, e.g. {"experiment": "ci"} '
        "(422 if the server has no MLflow tracking server).",
    )

    @field_validator("checks", "simple_blocks", "model_ids")
    @classmethod
    def _no_repeats(cls, value: list[Any] | None) -> list[Any] | None:
        return _unique(value)

    @model_validator(mode="after")
    def _one_model_source(self) -> AuditCreate:
        if (self.model_id is None) == (self.model_ids is None):
            raise ValueError("give exactly one of 'model_id' or 'model_ids'")
        return self

    def requested_options(self) -> dict[str, CheckOptions]:
        """Every requested check that takes options, as given or with its defaults."""
        return {
            check: getattr(self.options, check) or OPTION_MODELS[check]()
            for check in self.checks
            if check in OPTION_MODELS
        }

    def resolved_options(self) -> dict[str, dict[str, Any]]:
        """Every requested check that takes options, with all of them filled in (what the engine runs)."""
        return {check: options.model_dump(mode="json") for check, options in self.requested_options().items()}


class MlflowRunRead(BaseModel):
    """The audit's MLflow run: where it goes, then (once the audit is ready) its ids, or why it is missing."""

    experiment: str
    run_name: str
    run_id: str | None = Field(default=None, description="Set once the audit is ready and its run logged.")
    experiment_id: str | None = None
    run_url: str | None = Field(default=None, description="The run in the MLflow UI (HTTP tracking servers).")
    error: str | None = Field(
        default=None,
        description="Why the run could not be logged; the audit itself succeeded (its results are here).",
    )


class AuditRead(ResourceRead):
    model_id: str = Field(description="The audited model (the first one for an ensemble of model_ids).")
    model_ids: list[str] | None = Field(default=None, description="The members, for an ensemble of models.")
    ensemble_size: int = Field(default=1, description="Members of the audited model or ensemble.")
    combine: str | None = Field(default=None, description="How the ensemble combines its members.")
    dataset_id: str
    checks: list[str]
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="The options each check ran with (defaults filled in)."
    )
    simple_blocks: list[int] | None
    split: str
    repeats: int
    seed: int
    verdict_thresholds: VerdictThresholds | None = Field(
        default=None,
        description="The thresholds the verdict uses (defaults filled in; null for audits stored before "
        "thresholds were options).",
    )
    verdict: str | None = None
    verdict_code: VerdictCode | None = Field(
        default=None, description="The verdict in machine-readable form (null until the audit is ready)."
    )
    results: dict[str, Any] | None = None
    sections: list[dict[str, Any]] | None = Field(
        default=None,
        description="One report section per check, in the order they ran: title, summary, tables of "
        "formatted cells, the figures to show with their captions (null for audits stored before sections).",
    )
    environment: dict[str, str] | None = Field(
        default=None, description="Versions and device the audit ran with (sbaudit, torch, python, device)."
    )
    mlflow: MlflowRunRead | None = Field(
        default=None,
        description="The audit's MLflow run; null when the server does not log audits to MLflow.",
    )


class AuditPage(Page[AuditRead]):
    """A page of audits, newest first."""
