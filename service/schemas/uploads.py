"""The text fields of the upload forms (POST /v1/models/uploads, POST /v1/datasets/uploads).

Multipart fields arrive as strings; JSON-valued ones (``architecture``, ``normalization``, ``blocks``,
``input_shape``, ``simple_blocks``) are decoded first (``decode_form``) and then validated strictly like
any request body, so a 422 names the field (``body.architecture.width``, ``body.blocks.2.rows``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from service.schemas.common import Name, StrictModel
from service.schemas.models import Architecture

MAX_UPLOAD_BLOCKS = 1000
BOX_AXES = ("channels", "rows", "cols")
Dim = Annotated[int, Field(ge=1, le=1 << 24)]
Range = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class Normalization(StrictModel):
    """``(x - mean) / std`` before the network: one value for all inputs, or one per channel (images) or
    per feature (vectors)."""

    mean: list[float] = Field(min_length=1, max_length=65536)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=65536)

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length ({len(self.mean)} vs {len(self.std)})")
        return self


class ModelUpload(StrictModel):
    architecture: Architecture | None = Field(
        default=None, description="None: the file is an ONNX graph, which describes itself."
    )
    input_shape: list[Dim] | None = Field(
        default=None, min_length=1, max_length=3, description="Default: the dataset's (dataset_id)."
    )
    num_classes: int | None = Field(default=None, ge=1, le=100_000, description="Default: the dataset's.")
    normalization: Normalization | None = None
    dataset_id: str | None = Field(
        default=None, min_length=1, max_length=40, description="The dataset audits use by default."
    )
    name: str | None = Name

    @model_validator(mode="after")
    def _normalization_fits(self) -> ModelUpload:
        if self.normalization and self.input_shape:
            n = len(self.normalization.mean)
            if n not in (1, self.input_shape[0]):
                raise ValueError(
                    f"normalization needs 1 or {self.input_shape[0]} values (one per channel or feature), "
                    f"got {n}"
                )
        return self


ColumnName = Annotated[str, Field(min_length=1, max_length=1000)]


class BlockDeclaration(StrictModel):
    """A named feature block: ``indices`` (flattened input coordinates) for any input, a box of
    ``channels`` / ``rows`` / ``cols`` (half-open [start, stop); omitted = all) for (C, H, W) images,
    ``columns`` of a table (by name), or ``mask``: an image archive's per-example ``region`` (its masks'
    non-zero pixels) or their ``complement``."""

    name: str = Field(min_length=1, max_length=100)
    indices: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1, max_length=1 << 22)
    channels: Range | None = None
    rows: Range | None = None
    cols: Range | None = None
    columns: list[ColumnName] | None = Field(default=None, min_length=1, max_length=1 << 16)
    mask: Literal["region", "complement"] | None = None

    @field_validator("columns")
    @classmethod
    def _distinct_columns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat a column")
        return value

    @field_validator("channels", "rows", "cols")
    @classmethod
    def _half_open(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("must be [start, stop) with start < stop")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> BlockDeclaration:
        box = any(v is not None for v in (self.channels, self.rows, self.cols))
        kinds = [self.indices is not None, box, self.columns is not None, self.mask is not None]
        if sum(kinds) != 1:
            raise ValueError(
                "give exactly one of 'indices', a box ('channels', 'rows', 'cols'), 'columns' (a table's) "
                "or 'mask' ('region' or 'complement')"
            )
        return self


class DatasetUpload(StrictModel):
    blocks: list[BlockDeclaration] = Field(min_length=1, max_length=MAX_UPLOAD_BLOCKS)
    simple_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1, description="Indices of the blocks that form S (default: [0])."
    )
    num_classes: int | None = Field(default=None, ge=2, le=100_000, description="Default: largest label + 1.")
    name: str | None = Name
    label: ColumnName | None = Field(default=None, description="A table's label column (CSV, Parquet).")
    split_column: ColumnName | None = Field(
        default=None, description="A table's column of train/val/test (or 0/1/2); default: all test."
    )
    categorical: list[ColumnName] | None = Field(
        default=None, min_length=1, max_length=1 << 16, description="A table's columns to one-hot encode."
    )
    image_size: list[Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[H, W] every image of an archive is resized to (default: the first image's size).",
    )

    @field_validator("blocks")
    @classmethod
    def _unique_names(cls, value: list[BlockDeclaration]) -> list[BlockDeclaration]:
        names = [b.name for b in value]
        if len(set(names)) != len(names):
            raise ValueError("block names must be unique")
        return value

    @field_validator("simple_blocks")
    @classmethod
    def _simple_in_range(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return value
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an entry")
        blocks = info.data.get("blocks")
        for index in value:
            if blocks is not None and index >= len(blocks):
                raise ValueError(f"block {index} out of range (the upload declares {len(blocks)} blocks)")
        return value


MODEL_FIELDS = ("architecture", "input_shape", "num_classes", "normalization", "dataset_id", "name")
DATASET_FIELDS = (
    "blocks", "simple_blocks", "num_classes", "name", "label", "split_column", "categorical", "image_size",
)  # fmt: skip
_JSON_FIELDS = {"architecture", "normalization", "blocks", "simple_blocks", "input_shape", "categorical"}
_SHAPE_FIELDS = {"input_shape", "image_size"}
_INT_FIELDS = {"num_classes"}


class FormError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


def decode_form(fields: dict[str, str]) -> dict[str, Any]:
    """Text form fields -> the values the schema validates (JSON decoded; ``input_shape`` also as
    ``50`` or ``3,32,32``; integers as integers). Empty fields count as absent."""
    out: dict[str, Any] = {}
    for name, text in fields.items():
        text = text.strip()
        if text == "":
            continue
        if name in _SHAPE_FIELDS and not text.startswith("["):
            try:
                out[name] = [int(part) for part in text.split(",")]
            except ValueError:
                example = "[3, 32, 32], or 3,32,32" if name == "input_shape" else "[32, 32], or 32,32"
                raise FormError(name, f"must be a JSON list like {example}") from None
        elif name in _JSON_FIELDS | _SHAPE_FIELDS:
            try:
                out[name] = json.loads(text)
            except ValueError as exc:
                raise FormError(name, f"invalid JSON: {exc}") from None
            except RecursionError:
                raise FormError(name, "invalid JSON: nested too deeply") from None
        elif name in _INT_FIELDS:
            try:
                out[name] = int(text)
            except ValueError:
                raise FormError(name, "must be an integer") from None
        else:
            out[name] = text
    return out
