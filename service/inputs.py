"""A job's inputs (the dataset a model trains on, the model and dataset an audit reads), ready or not.

A create request may name an input whose job has not finished: the new job then waits for it
(``waiting``, service/jobstore.py) instead of the request being refused. Its checks (does the architecture
read these inputs, do S and the split exist) and its budget still run at submission, so a request that
could never run is a 422 now, not a failure later. A ready dataset has the description its job stored; a
not-ready one only its request, so :func:`dataset_description` derives from that request what the
description will say: the engine's layout rules that matter here (two blocks per preset, the default
sizes, one coordinate per block count) are mirrored in service/schemas/datasets.py, and
tests/service/test_job_dependencies.py checks the derived description against a generated one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.errors import Problem
from service.estimates import IMAGE_FEATURES, requested_sizes
from service.jobstore import lock_input
from service.models import Dataset, Model
from service.schemas.datasets import IMAGE_PRESETS, PRESET_FEATURES, DatasetCreate

# Every preset is two blocks: S and S^c (sbengine/data/presets.py, mnist_cifar.py).
PRESET_BLOCKS = 2
IMAGE_SHAPE = [3, 64, 32]
assert IMAGE_FEATURES == 3 * 64 * 32


def usable(row: Dataset | Model, kind: str, field: str) -> bool:
    """Whether the input is ready (False: the new job will wait for it); 409 naming ``field`` for an input
    that failed or was canceled, which never will be."""
    if row.status in ("failed", "canceled"):
        reason = f": {row.error}" if row.status == "failed" and row.error else ""
        raise Problem(
            409,
            f"{kind} {row.id} is {row.status}{reason}; it will never be ready (job {row.job_id})",
            slug="input-unusable",
            field=field,
        )
    return row.status == "ready"


Pending = tuple[Dataset | Model, str, str]  # an input not ready when read: the row, its kind, its field


def lock_waited(session: Session, pending: list[Pending]) -> list[str]:
    """Lock the rows of the inputs that were not ready (:func:`service.jobstore.lock_input`) and read them
    again; the ids of those still not ready, for the new job's ``waiting_for``. Locked oldest first, the
    order in which a job finishing an input locks it and then the newer resources waiting for it, so a
    submission and a finishing job never wait for each other in a circle."""
    still_waiting: dict[str, bool] = {}
    for row, kind, field in sorted(pending, key=lambda p: (p[0].created_at, p[0].id)):
        fresh = lock_input(session, row)
        still_waiting[fresh.id] = not usable(fresh, kind, field)
    return list(dict.fromkeys(row.id for row, _, _ in pending if still_waiting[row.id]))


def dataset_description(row: Dataset) -> dict[str, Any]:
    """The stored description of a ready dataset; for one still being generated, what its request says the
    description will be (shape, classes, blocks, sizes, rotation: what checks and estimates read)."""
    if row.status == "ready" or row.description:
        return dict(row.description or {})
    body = DatasetCreate.model_validate(row.spec)
    sizes = requested_sizes(body)
    if body.preset in IMAGE_PRESETS:
        shape, blocks, rotated = IMAGE_SHAPE, PRESET_BLOCKS, False
    else:
        if body.blocks is not None:
            shape, blocks = [sum(b.count for b in body.blocks)], len(body.blocks)
        else:
            shape, blocks = [PRESET_FEATURES[body.preset or ""]], PRESET_BLOCKS
        rotated = body.rotate is not False
    return {
        "input_shape": shape,
        "num_classes": 2,
        "blocks": [{} for _ in range(blocks)],
        "sizes": {split: n for split, n in sizes.items() if n or split != "val"},
        "rotated": rotated,
    }
