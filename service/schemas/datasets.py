"""Dataset requests: a named preset or an explicit composition of feature blocks (docs/method.md §1).

The ranges mirror sbengine's own checks (sbengine/data/synthetic.py) so a bad request is answered 422,
naming the field, before a job is queued; tests/service/test_schema_mirror.py keeps the two in step.
Upper bounds that are deployment choices (samples, dimension) come from Settings and are checked in
service/limits.py.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from service.schemas.common import Name, Page, ReadModel, ResourceRead, Seed, StrictModel

SyntheticPreset = Literal[
    "LMS-5", "LMS-7", "MS-(5,7)", "MS-5", "MS-7", "noisy-LMS-5", "noisy-LMS-7", "AdvMS-(5,7)"
]
ImagePreset = Literal["MNIST-CIFAR", "MNIST-CIFAR-A", "MNIST-CIFAR-B", "MNIST-CIFAR-C"]
PresetName = Literal[SyntheticPreset, ImagePreset]  # one flat Literal: a single, clear error message
SYNTHETIC_PRESETS: tuple[str, ...] = typing.get_args(SyntheticPreset)
IMAGE_PRESETS: tuple[str, ...] = typing.get_args(ImagePreset)
MAX_BLOCK_COUNT = 100_000
# (n_train, n_val, n_test) a synthetic dataset gets for the sizes its request leaves out (sbengine's
# SYNTHETIC_PRESETS and SyntheticSpec), so that SBAUDIT_MAX_SAMPLES bounds those too.
# tests/service/test_hostile_input.py keeps them in step with the engine.
PRESET_SIZES: dict[str, tuple[int, int, int]] = {
    "LMS-5": (100_000, 10_000, 10_000),
    "LMS-7": (100_000, 10_000, 10_000),
    "MS-(5,7)": (100_000, 10_000, 10_000),
    "MS-5": (100_000, 10_000, 10_000),
    "MS-7": (40_000, 10_000, 10_000),
    "noisy-LMS-5": (40_000, 10_000, 10_000),
    "noisy-LMS-7": (40_000, 10_000, 10_000),
    "AdvMS-(5,7)": (6_000, 2_000, 2_000),
}
BLOCKS_SIZES: tuple[int, int, int] = (50_000, 10_000, 10_000)
# Coordinates per row of each synthetic preset (its blocks' counts), for the job budget
# (service/estimates.py); tests/security/test_budgets.py keeps them in step with the engine.
PRESET_FEATURES: dict[str, int] = {**dict.fromkeys(PRESET_SIZES, 50), "AdvMS-(5,7)": 20}

Count = Field(default=1, ge=1, le=MAX_BLOCK_COUNT, description="How many coordinates of this kind.")
Margin = Field(default=0.1, gt=0, lt=1, description="Effective margin γ (the gap is 2γB).")
Noise = Field(default=0.1, gt=0, lt=1, description="Share p of rows whose coordinate is corrupted.")
NoiseMode = Literal["margin", "flip"]
BlockName = Field(default=None, min_length=1, max_length=100)


class _Block(StrictModel):
    count: int = Count
    name: str | None = BlockName


class LinearBlock(_Block):
    type: Literal["linear"]
    margin: float = Margin


class NoisyLinearBlock(_Block):
    type: Literal["noisy_linear"]
    margin: float = Margin
    noise: float = Noise
    noise_mode: NoiseMode = "margin"


def _slab_margin(margin: float, info: ValidationInfo) -> float:
    k = info.data.get("k")
    if k is not None and margin >= 1 / (k - 1):
        raise ValueError(f"margin {margin} leaves no room for {k} slabs (needs margin < {1 / (k - 1):.4f})")
    return margin


class SlabBlock(_Block):
    type: Literal["slab"]
    k: Literal[3, 5, 7] = Field(description="Number of slabs.")
    margin: float = Margin

    _margin_fits = field_validator("margin")(_slab_margin)


class NoisySlabBlock(_Block):
    type: Literal["noisy_slab"]
    k: Literal[3, 5, 7]
    margin: float = Margin
    noise: float = Noise
    noise_mode: NoiseMode = "margin"

    _margin_fits = field_validator("margin")(_slab_margin)


class NoiseBlock(_Block):
    type: Literal["noise"]


Block = Annotated[
    LinearBlock | NoisyLinearBlock | SlabBlock | NoisySlabBlock | NoiseBlock, Field(discriminator="type")
]


class DatasetCreate(StrictModel):
    """Either ``preset`` or ``blocks``. Sizes default to the preset's (or 50000/10000/10000 for blocks)."""

    preset: PresetName | None = None
    blocks: list[Block] | None = Field(default=None, min_length=1, max_length=1000)
    rotate: bool | None = Field(default=None, description="Apply a random rotation (default: true).")
    width: float | None = Field(default=None, gt=0, le=1e6, description="Half-range B of the coordinates.")
    simple_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Indices of the blocks that form S (default: [0]).",
    )
    n_train: int | None = Field(default=None, ge=2)
    n_val: int | None = Field(default=None, ge=0)
    n_test: int | None = Field(default=None, ge=2)
    seed: int = Seed
    name: str | None = Name

    @field_validator("rotate", "width", "simple_blocks")
    @classmethod
    def _synthetic_only(cls, value: Any, info: ValidationInfo) -> Any:
        preset = info.data.get("preset")
        if value is not None and preset in IMAGE_PRESETS:
            raise ValueError(f"does not apply to the image preset {preset}")
        blocks = info.data.get("blocks")
        if info.field_name == "simple_blocks" and value is not None and blocks:
            for index in value:
                if index >= len(blocks):
                    raise ValueError(f"block {index} out of range (the dataset has {len(blocks)} blocks)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatasetCreate:
        if (self.preset is None) == (self.blocks is None):
            raise ValueError("give exactly one of 'preset' or 'blocks'")
        return self

    def default_sizes(self) -> dict[str, int]:
        """The sizes the engine uses for the splits the request leaves out (image presets: none known here;
        they default to what the raw data holds)."""
        sizes = BLOCKS_SIZES if self.blocks is not None else PRESET_SIZES.get(self.preset or "")
        if sizes is None:
            return {}
        return dict(zip(("n_train", "n_val", "n_test"), sizes, strict=True))

    def engine_request(self) -> dict[str, Any]:
        """The request sbengine.data.build_dataset takes."""
        out = self.model_dump(exclude_none=True)
        if "blocks" in out:
            out["blocks"] = [{k: v for k, v in b.items() if v is not None} for b in out["blocks"]]
        return out


class BayesAccuracy(ReadModel):
    blocks: list[float | None] = Field(description="Best accuracy from each block alone, in block order.")
    simple: float | None = Field(description="From the blocks in S together.")
    complex: float | None = Field(description="From the blocks in S^c together.")
    all: float | None = Field(description="From every block together.")


class FeatureBlockRead(ReadModel):
    name: str
    kind: str
    indices: list[int]
    bayes_accuracy: float | None = None
    params: dict[str, Any] = {}


class DatasetRead(ResourceRead):
    spec: dict[str, Any] = Field(description="The request that created the dataset.")
    input_shape: list[int] | None = None
    num_classes: int | None = None
    blocks: list[FeatureBlockRead] | None = None
    simple_blocks: list[int] | None = None
    bayes_accuracy: BayesAccuracy | None = None
    sizes: dict[str, int] | None = None
    rotated: bool | None = None
    seed: int | None = None
    classes: list[str] | None = Field(
        default=None, description="Class names of an uploaded image archive or table, in label order."
    )
    feature_names: list[str] | None = Field(
        default=None, description="An uploaded table's features: its columns, one-hot ones as column=value."
    )


class DatasetPage(Page[DatasetRead]):
    """A page of datasets, newest first."""
