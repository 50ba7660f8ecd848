"""Model-training requests: an architecture from the engine's registry, a training config and a seed.

Names, options, defaults and ranges mirror sbengine/models/registry.py and sbengine/train.py (kept in step
by tests/service/test_schema_mirror.py). The stored architecture and training config are the complete,
resolved ones (defaults filled in), so a model row records exactly what was built.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from service.schemas.common import Name, Page, ResourceRead, Seed, StrictModel

VisionName = Literal[
    "resnet18", "resnet34", "resnet50", "mobilenet_v2", "densenet121", "googlenet",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
]  # fmt: skip
VISION_ARCHITECTURES: tuple[str, ...] = typing.get_args(VisionName)


class FCNArchitecture(StrictModel):
    """A (width, depth)-FCN; flattens its input, so it trains on vectors and images."""

    name: Literal["fcn"]
    width: int = Field(default=100, ge=1, le=65536)
    depth: int = Field(default=2, ge=1, le=64)
    activation: Literal["relu", "leaky_relu", "prelu", "tanh"] = "relu"
    dropout: float = Field(default=0.0, ge=0, lt=1)
    input_dropout: float = Field(default=0.0, ge=0, lt=1)
    batch_norm: bool = False
    init: Literal["default", "kaiming", "xavier"] = "default"
    init_scale: float = Field(default=1.0, gt=0)


class CNN1dArchitecture(StrictModel):
    name: Literal["cnn1d"]
    filters: int = Field(default=32, ge=1, le=4096)
    kernel: int = Field(default=7, ge=1, le=1025, description="Odd kernel size.")
    layers: int = Field(default=1, ge=1, le=64)
    pool: bool = False

    @field_validator("kernel")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value


class RecurrentArchitecture(StrictModel):
    name: Literal["gru", "lstm"]
    hidden: int = Field(default=100, ge=1, le=8192)
    step_features: int = Field(
        default=10, ge=1, le=65536, description="Features read per step; divides the input size."
    )
    layers: int = Field(default=1, ge=1, le=16)
    many_to_many: bool = False


class VisionArchitecture(StrictModel):
    """A CIFAR-style network for (3, H, W) images, H and W multiples of 32."""

    name: VisionName


LibraryName = Literal["torchvision", "timm"]
LIBRARIES: tuple[str, ...] = typing.get_args(LibraryName)
# Mirrors sbengine/models/library.py (tests/service/test_schema_mirror.py): the options that would fetch
# weights or contradict the declared input_shape / num_classes.
LIBRARY_REFUSED_OPTIONS = frozenset(
    {
        "weights", "weights_backbone", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
        "pretrained_strict", "checkpoint_path", "cache_dir", "progress", "num_classes", "in_chans",
        "features_only", "scriptable", "exportable", "no_jit",
    }
)  # fmt: skip
MAX_LIBRARY_OPTIONS = 32
_OPTION_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


class LibraryArchitecture(StrictModel):
    """A torchvision or timm image classifier by name, for (C, H, W) images of any size and any number of
    classes; trained from fresh weights (POST /v1/models) or loaded from an upload. Further keys are keyword
    options of ``torchvision.models.get_model`` / ``timm.create_model`` (numbers, strings, booleans;
    checked by the library when the engine builds the model, in the validator program at submission).
    Pretrained weights are never fetched: options that would fetch or read weights are refused."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    name: LibraryName
    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")

    @model_validator(mode="after")
    def _scalar_options(self) -> LibraryArchitecture:
        extra = self.model_extra or {}
        if len(extra) > MAX_LIBRARY_OPTIONS:
            raise ValueError(f"at most {MAX_LIBRARY_OPTIONS} options")
        for key, value in extra.items():
            if not _OPTION_NAME.match(key):
                raise ValueError(f"option names are lower-case identifiers, got {key[:70]!r}")
            if key in LIBRARY_REFUSED_OPTIONS:
                raise ValueError(
                    f"option {key!r} is not allowed: weights come from the upload, classes and channels "
                    "from input_shape and num_classes"
                )
            if value is not None and not isinstance(value, (bool, int, float, str)):
                raise ValueError(f"option {key!r} must be a number, string, boolean or null")
        return self


Architecture = Annotated[
    FCNArchitecture | CNN1dArchitecture | RecurrentArchitecture | VisionArchitecture | LibraryArchitecture,
    Field(discriminator="name"),
]


class StopRule(StrictModel):
    """Stop when train accuracy >= train_accuracy or train loss < train_loss, then patience_updates more;
    always at max_updates / max_epochs."""

    train_accuracy: float | None = Field(default=None, gt=0, le=1)
    train_loss: float | None = Field(default=None, gt=0)
    max_updates: int = Field(default=100_000, ge=1, le=100_000_000)
    max_epochs: int | None = Field(default=None, ge=1)
    patience_updates: int = Field(default=0, ge=0)


class StepSchedule(StrictModel):
    step_epochs: int = Field(ge=1)
    gamma: float = Field(gt=0, le=1)


PGDLoss = Literal["untargeted", "random_targeted", "plusone_targeted", "binary_targeted", "binary_hybrid"]


class PGDAttack(StrictModel):
    """One PGD attack (sbengine.attacks.PGDConfig): ``eps``, ``step_size`` and ``rand_eps`` are absolute, in
    input units. ``loss`` is any of the engine's losses except "targeted", which needs target labels."""

    norm: Literal["l2", "linf"] = "l2"
    eps: float = Field(gt=0)
    step_size: float = Field(gt=0)
    steps: int = Field(default=20, ge=1, le=1000)
    loss: PGDLoss = "untargeted"
    rand_eps: float = Field(default=1e-3, ge=0)
    restarts: int = Field(default=1, ge=1, le=100)
    bounds: list[float] | None = Field(
        default=None, min_length=2, max_length=2, description="[low, high] box for perturbed inputs."
    )
    minimal: bool = Field(
        default=False, description="No eps-projection; stop moving an example once flipped."
    )

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("must be [low, high] with low < high")
        return value


class AdversarialTraining(StrictModel):
    """PGD adversarial training (docs/method.md §7.2): each batch is replaced by its PGD perturbation. Each
    evaluation adds robust and S-/S^c-randomized validation accuracy to the history."""

    attack: PGDAttack
    eval_attack: PGDAttack | None = Field(default=None, description="Default: the training attack.")
    mixed_precision: bool = Field(default=True, description="bfloat16 autocast on CUDA.")
    eval_examples: int = Field(default=2000, ge=1, le=1_000_000, description="Validation rows attacked.")


class TrainingConfig(StrictModel):
    optimizer: Literal["sgd", "adam", "rmsprop"] = "sgd"
    lr: float = Field(default=0.1, gt=0, le=100)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0, lt=1)
    batch_size: int = Field(default=256, ge=1, le=65536)
    stop: StopRule = Field(default_factory=lambda: StopRule(train_accuracy=0.9999))
    eval_every: int = Field(default=1000, ge=1, description="Evaluate on train and val every N updates.")
    select: Literal["final", "best_val"] = "final"
    schedule: StepSchedule | None = None
    adversarial: AdversarialTraining | None = None


MAX_ENSEMBLE_SIZE = 32


class ModelCreate(StrictModel):
    dataset_id: str = Field(min_length=1, max_length=40)
    architecture: Architecture
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    ensemble_size: int = Field(
        default=1,
        ge=1,
        le=MAX_ENSEMBLE_SIZE,
        description="Members trained independently (member i's seed from sbengine.ensemble.member_seeds).",
    )
    seed: int = Seed
    name: str | None = Name


class ModelRead(ResourceRead):
    dataset_id: str
    architecture: dict[str, Any]
    training: dict[str, Any]
    ensemble_size: int = 1
    seed: int
    input_shape: list[int] | None = None
    num_classes: int | None = None
    metrics: dict[str, float] | None = Field(default=None, description="Final accuracy and loss per split.")
    result: dict[str, Any] | None = Field(
        default=None,
        description="updates, epochs, seconds, stopped_because, selected_step (ensembles: also members).",
    )
    capabilities: dict[str, Any] = Field(
        default_factory=lambda: {"gradients": True, "runtime": "torch", "blocked_by": [], "reason": None},
        description="What the model can do: gradients (false for an ONNX graph run by onnxruntime, which "
        "pgd and uap need), its runtime, and the operators that kept it out of torch.",
    )


class ModelPage(Page[ModelRead]):
    """A page of models, newest first."""
