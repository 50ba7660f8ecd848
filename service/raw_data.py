"""Which raw files an image preset needs, checked when it is submitted.

A preset built from MNIST and CIFAR-10 reads their files from the raw-data folder (``SBAUDIT_RAW_DATA_DIR``,
default ``<data dir>/raw``), in torchvision's layout. A server that has neither the files nor permission to
download them (``SBAUDIT_DOWNLOAD_RAW_DATA``) would queue a job that can only fail; this refuses the
request up front with a 422 naming every missing file and how an operator provides it. The API does not
import the engine, so the names are listed here; sbengine/data/images.py reads the same ones (a test
checks that the two agree).
"""

from __future__ import annotations

from pathlib import Path

from service.errors import Problem
from service.settings import Settings

MNIST_FILES = tuple(f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
# Folder (relative to the raw-data folder) -> (its files, whether a gzipped copy also counts).
REQUIRED: dict[str, tuple[tuple[str, ...], bool]] = {
    "MNIST/raw": (MNIST_FILES, True),
    "cifar-10-batches-py": (CIFAR10_FILES, False),
}


def raw_data_dir(settings: Settings) -> Path:
    return settings.raw_data_dir or settings.data_dir / "raw"


def missing_files(root: Path) -> list[str]:
    """The required files (relative to ``root``) that are not there."""
    missing = []
    for folder, (names, gz) in REQUIRED.items():
        for name in names:
            candidates = (name, f"{name}.gz") if gz else (name,)
            if not any((root / folder / c).is_file() for c in candidates):
                missing.append(f"{folder}/{name}")
    return missing


def check_image_preset(preset: str, settings: Settings) -> None:
    """422 when the preset's raw files are missing and this server may not download them."""
    if settings.download_raw_data:
        return
    missing = missing_files(raw_data_dir(settings))
    if not missing:
        return
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    message = (
        f"{preset} is built from the MNIST and CIFAR-10 files, which this server does not have ({shown} "
        "missing from its raw-data folder) and may not download. An operator provides them: copy "
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] and "
        "cifar-10-batches-py/{data_batch_1..5,test_batch} into the folder SBAUDIT_RAW_DATA_DIR names, or "
        "sets SBAUDIT_DOWNLOAD_RAW_DATA=1 on a server with internet access (docs/operations.md)"
    )
    raise Problem(
        422,
        f"body.preset: {message}",
        slug="raw-data-missing",
        title="Raw data not available",
        errors=[{"field": "body.preset", "message": message}],
        missing=missing,
    )
