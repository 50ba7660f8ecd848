"""Deployment limits (from Settings) checked on requests after schema validation.

The schemas carry the engine's hard ranges; these are the operator's bounds on how much work one request
may ask for. Each violation is a 422 naming the field, before any job is queued.
"""

from __future__ import annotations

from service.errors import field_error
from service.schemas.audits import AuditCreate
from service.schemas.datasets import DatasetCreate
from service.schemas.models import ModelCreate
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
