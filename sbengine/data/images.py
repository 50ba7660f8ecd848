"""Raw MNIST and CIFAR-10 arrays, read from torchvision's on-disk layout.

We parse the files ourselves instead of going through ``torchvision.datasets``: their CIFAR class checks
MD5 sums on every load (so tests cannot use tiny stand-in files), and both classes return PIL images one
at a time, while the builders want whole uint8 arrays. torchvision is only used to *download*, so files
land exactly where its own classes (and anyone who already has them) put them:

    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}

CIFAR batches are pickles. They are read with an unpickler that only admits the few numpy globals an
array needs, so a planted file in the raw-data folder cannot run code in a worker.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

RAW_DATA_DIR_ENV = "SBAUDIT_RAW_DATA_DIR"
MNIST_DIR = Path("MNIST") / "raw"
CIFAR10_DIR = Path("cifar-10-batches-py")
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES = ("test_batch",)
NUM_CLASSES = 10


class RawDataMissing(FileNotFoundError):
    """Raw files that are neither on this machine nor downloadable: an operator's condition, not a bug.

    ``str()`` names the folder (for the operator's log and the CLI); ``public`` says the same without the
    server's paths, for a job's error field, which the user who submitted the job reads.
    """

    def __init__(self, message: str, *, public: str) -> None:
        super().__init__(message)
        self.public = public


def default_raw_data_dir() -> Path:
    """Where MNIST/CIFAR files live: ``$SBAUDIT_RAW_DATA_DIR``, else ``./sbaudit-data/raw``."""
    return Path(os.environ.get(RAW_DATA_DIR_ENV) or Path("sbaudit-data") / "raw")


def load_mnist(root: str | Path, *, train: bool, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images as uint8 ``(n, 28, 28)`` and labels as int64 ``(n,)`` (60k train / 10k test)."""
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def fetch() -> None:
        import torchvision.datasets

        torchvision.datasets.MNIST(str(root), train=train, download=True)

    images_path, labels_path = _ensure_files(
        Path(root),
        MNIST_DIR,
        names,
        what=f"MNIST {'training' if train else 'test'}",
        fetch=fetch if download else None,
        allow_gz=True,
    )
    images = _read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = _read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: MNIST images must be 28x28, got {images.shape[1]}x{images.shape[2]}"
        )
    _check_labels(labels, len(images), labels_path)
    return images, labels.astype(np.int64)


def load_cifar10(root: str | Path, *, train: bool, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images as uint8 ``(n, 3, 32, 32)`` (channels first) and labels as int64 ``(n,)``."""
    names = CIFAR10_TRAIN_BATCHES if train else CIFAR10_TEST_BATCHES

    def fetch() -> None:
        import torchvision.datasets

        torchvision.datasets.CIFAR10(str(root), train=train, download=True)

    paths = _ensure_files(
        Path(root),
        CIFAR10_DIR,
        names,
        what=f"CIFAR-10 {'training' if train else 'test'}",
        fetch=fetch if download else None,
        allow_gz=False,
    )
    images, labels = zip(*(_read_cifar_batch(p) for p in paths), strict=True)
    return np.concatenate(images), np.concatenate(labels)


# --- finding (and fetching) files ------------------------------------------------------------------------


def _find(directory: Path, name: str, allow_gz: bool) -> Path | None:
    for candidate in (name, f"{name}.gz") if allow_gz else (name,):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _ensure_files(
    root: Path,
    subdir: Path,
    names: tuple[str, ...],
    *,
    what: str,
    fetch: Callable[[], None] | None,
    allow_gz: bool,
) -> list[Path]:
    """Paths of ``names`` in ``root / subdir``; downloads once through ``fetch`` if any is missing.

    The error is a single line naming the folder and every file, because it ends up in a job's error field
    where an operator has to act on it without a traceback.
    """
    directory = root / subdir
    found = [_find(directory, n, allow_gz) for n in names]
    if all(found):
        return found  # type: ignore[return-value]
    reason = "downloading is disabled"
    if fetch is not None:
        try:
            fetch()
        except Exception as exc:  # offline, mirror down, checksum mismatch: all mean "not available"
            reason = " ".join(f"download failed: {type(exc).__name__}: {exc}".split())
        else:
            found = [_find(directory, n, allow_gz) for n in names]
            if all(found):
                return found  # type: ignore[return-value]
            reason = "the download finished but did not produce them"
    expected = ", ".join(f"{n} (or {n}.gz)" if allow_gz else n for n in names)
    raise RawDataMissing(
        f"{what} files not found in {directory}: expected {expected} ({reason}). Fix: put the files there, "
        f"point {RAW_DATA_DIR_ENV} at a folder whose {subdir.as_posix()}/ holds them, "
        "or let this machine download them (download=True with internet access).",
        public=f"{what} files are not on this server: its raw-data folder ({RAW_DATA_DIR_ENV}) needs "
        f"{subdir.as_posix()}/ with {expected} ({reason.split(':')[0]}); an operator provides them "
        "(docs/operations.md, raw data)",
    )


# --- parsing -------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable gzip file ({exc})") from exc
    return path.read_bytes()


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format): a big-endian magic number, one big-endian uint32 per
    dimension, then the unsigned bytes in C order."""
    data = _read_bytes(path)
    kind = "labels" if expected_magic == IDX_LABELS_MAGIC else "images"
    if len(data) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ValueError(
            f"{path}: bad magic number {magic} for an MNIST {kind} file (expected {expected_magic})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(
            f"{path}: size mismatch: header says {'x'.join(map(str, dims))} = {int(np.prod(dims))} bytes of "
            f"{kind}, file has {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array (py2 or py3, numpy 1 or 2) refers to."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: a dict with ``data`` (n x 3072 uint8, R then G then B planes) and
    ``labels``. latin1 is what the Python 2 pickles need (as in torchvision); keys may be str or bytes."""
    with path.open("rb") as f:
        try:
            entry = _ArrayOnlyUnpickler(f, encoding="latin1").load()
        except Exception as exc:  # a corrupt pickle can fail in many ways; all mean "not a batch"
            raise ValueError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: not a CIFAR-10 python batch (a {type(entry).__name__}, not a dict)")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(
            f"{path}: CIFAR-10 batch lacks 'data' or 'labels' (has: {', '.join(map(str, entry))})"
        )
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: CIFAR-10 data must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}"
        )
    labels = np.asarray(entry["labels"], dtype=np.int64)
    _check_labels(labels, len(data), path)
    return data.reshape(-1, 3, 32, 32), labels


def _check_labels(labels: np.ndarray, n: int, path: Path) -> None:
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{path}: {labels.shape} labels for {n} images")
    if n and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"{path}: labels must lie in 0..{NUM_CLASSES - 1}, got {labels.min()}..{labels.max()}"
        )
