"""Deployment limits (from Settings) checked on requests after schema validation.

The schemas carry the engine's hard ranges; these are the operator's bounds on how much work one request
may ask for. Each violation is a 422 naming the field, before any job is queued.
"""

from __future__ import annotations

import math

from service.errors import field_error
from service.schemas.audits import AuditCreate
from service.schemas.datasets import DatasetCreate
from service.schemas.models import ModelCreate
from service.schemas.uploads import BOX_AXES, DatasetUpload, ModelUpload
from service.settings import Settings


def _at_most(field: str, value: int | float | None, limit: int | float, what: str) -> None:
    if value is not None and value > limit:
        raise field_error(field, f"{value} exceeds this server's limit of {limit} {what}")


def check_dataset(body: DatasetCreate, settings: Settings) -> None:
    defaults = body.default_sizes()
    for split in ("n_train", "n_val", "n_test"):
        what = "samples (SBAUDIT_MAX_SAMPLES)"
        value = getattr(body, split)
        if value is None and defaults.get(split, 0) > settings.max_samples:
            source = body.preset or "a block composition"
            raise field_error(
                f"body.{split}",
                f"defaults to {defaults[split]} for {source}, which exceeds this server's limit of "
                f"{settings.max_samples} {what}; give {split} explicitly",
            )
        _at_most(f"body.{split}", value, settings.max_samples, what)
    if body.blocks is not None:
        dims = sum(b.count for b in body.blocks)
        _at_most("body.blocks", dims, settings.max_features, "coordinates in total (SBAUDIT_MAX_FEATURES)")


def check_model_upload(
    body: ModelUpload, input_shape: list[int] | None, num_classes: int | None, settings: Settings
) -> None:
    """An uploaded model's input size and classes (declared, or its dataset's), before the validator builds
    the model and runs a batch through it."""
    source = "body.dataset_id"
    if input_shape is None or num_classes is None:  # an ONNX graph that leaves them to its signature
        return
    _at_most(
        "body.input_shape" if body.input_shape else source,
        math.prod(input_shape),
        settings.max_input_size,
        f"values per example, for inputs {tuple(input_shape)} (SBAUDIT_MAX_INPUT_SIZE)",
    )
    _at_most(
        "body.num_classes" if body.num_classes else source,
        num_classes,
        settings.max_classes,
        "classes (SBAUDIT_MAX_CLASSES)",
    )


def check_dataset_upload(body: DatasetUpload, settings: Settings) -> None:
    """What an uploaded dataset's form declares, before the validator indexes the arrays with it."""
    _at_most("body.num_classes", body.num_classes, settings.max_classes, "classes (SBAUDIT_MAX_CLASSES)")
    for i, block in enumerate(body.blocks):
        ends = {"indices": max(block.indices) + 1} if block.indices else {}
        ends.update({axis: box[1] for axis in BOX_AXES if (box := getattr(block, axis)) is not None})
        for option, end in ends.items():
            _at_most(
                f"body.blocks.{i}.{option}",
                end,
                settings.max_input_size,
                "values per example, which this block reaches (SBAUDIT_MAX_INPUT_SIZE)",
            )


def check_model(body: ModelCreate, settings: Settings) -> None:
    arch = body.architecture
    for option in ("width", "filters", "hidden"):
        value = getattr(arch, option, None)
        _at_most(f"body.architecture.{option}", value, settings.max_width, "(SBAUDIT_MAX_WIDTH)")
    for option in ("depth", "layers"):
        value = getattr(arch, option, None)
        _at_most(f"body.architecture.{option}", value, settings.max_depth, "(SBAUDIT_MAX_DEPTH)")
    training, stop = body.training, body.training.stop
    _at_most(
        "body.training.batch_size", training.batch_size, settings.max_batch_size, "(SBAUDIT_MAX_BATCH_SIZE)"
    )
    _at_most(
        "body.training.stop.max_updates", stop.max_updates, settings.max_updates, "(SBAUDIT_MAX_UPDATES)"
    )
    _at_most("body.training.stop.max_epochs", stop.max_epochs, settings.max_epochs, "(SBAUDIT_MAX_EPOCHS)")
    _at_most(
        "body.ensemble_size",
        body.ensemble_size,
        settings.max_ensemble_size,
        "members (SBAUDIT_MAX_ENSEMBLE_SIZE)",
    )


def check_audit(body: AuditCreate, settings: Settings) -> None:
    _at_most("body.repeats", body.repeats, settings.max_repeats, "repeats (SBAUDIT_MAX_REPEATS)")
