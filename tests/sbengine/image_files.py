"""Write tiny MNIST / CIFAR-10 files in exactly the on-disk formats torchvision downloads.

Every image carries its identity in its pixels so tests can trace a composed MNIST-CIFAR image back to
its sources: pixel (0, 0) of the first channel is the class, (0, 1) and (0, 2) the index (low, high byte)
within its file set; everything else is a constant fill (MNIST also gets one 255 pixel), so any shift,
transpose or channel mix-up shows.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

try:  # numpy 2; the name the original (numpy 1) files use is patched in below
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct

MNIST_FILL = 200
CIFAR_FILLS = (150, 100, 50)  # per channel; channel 0 also carries the code
CIFAR_LABEL_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def labels_from_counts(counts: dict[int, int], seed: int) -> np.ndarray:
    """Labels with ``counts[c]`` images of class c, interleaved in a fixed random order."""
    labels = np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in sorted(counts.items())])
    return np.random.default_rng(seed).permutation(labels)


def _encode(images: np.ndarray, labels: np.ndarray) -> None:
    idx = np.arange(len(labels))
    images[:, 0, 0] = labels
    images[:, 0, 1] = idx % 256
    images[:, 0, 2] = idx // 256


def mnist_images(labels: np.ndarray) -> np.ndarray:
    images = np.full((len(labels), 28, 28), MNIST_FILL, dtype=np.uint8)
    images[:, 27, 27] = 255
    _encode(images, labels)
    return images


def cifar_images(labels: np.ndarray) -> np.ndarray:
    images = np.empty((len(labels), 3, 32, 32), dtype=np.uint8)
    for channel, fill in enumerate(CIFAR_FILLS):
        images[:, channel] = fill
    _encode(images[:, 0], labels)
    return images


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """IDX: big-endian uint32 magic, one big-endian uint32 per dimension, then the bytes in C order."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array).tobytes()


def write_mnist(root: Path, *, train: bool, labels: np.ndarray, gz: bool = False) -> np.ndarray:
    """Write ``<root>/MNIST/raw/{train,t10k}-*-ubyte[.gz]``; returns the images written."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    prefix = "train" if train else "t10k"
    images = mnist_images(labels)
    for name, blob in (
        (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
        (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels.astype(np.uint8), 2049)),
    ):
        if gz:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(blob)
        else:
            (raw / name).write_bytes(blob)
    return images


class _Py2Array:
    """Pickles an array the way Python 2 numpy did in the original CIFAR files: ``numpy.core`` globals and
    the pixel buffer as a (latin1) string, which is why readers must load with ``encoding="latin1"``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self):
        a = self.array
        state = (1, a.shape, a.dtype, False, a.tobytes().decode("latin1"))
        return (_reconstruct, (np.ndarray, (0,), "b"), state)


def _batch(images: np.ndarray, labels: np.ndarray, label: str, *, bytes_keys: bool) -> dict:
    data = images.reshape(len(images), 3 * 32 * 32)  # R plane, G plane, B plane, each row-major
    entry = {
        "batch_label": label,
        "labels": [int(c) for c in labels],
        "data": data if bytes_keys else _Py2Array(data),
        "filenames": [f"img_{i:05d}.png" for i in range(len(labels))],
    }
    return {k.encode(): v for k, v in entry.items()} if bytes_keys else entry


def write_cifar10(
    root: Path, *, train_labels: np.ndarray, test_labels: np.ndarray, bytes_keys: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Write ``<root>/cifar-10-batches-py/`` (5 data batches, test_batch, batches.meta) as protocol-2
    pickles like the originals; returns the (train, test) images written. ``bytes_keys`` instead writes
    a modern Python 3 pickle with bytes keys and a plain array."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_images, test_images = cifar_images(train_labels), cifar_images(test_labels)
    parts = np.array_split(np.arange(len(train_labels)), 5)
    files = {
        f"data_batch_{i + 1}": _batch(
            train_images[p], train_labels[p], f"training batch {i + 1} of 5", bytes_keys=bytes_keys
        )
        for i, p in enumerate(parts)
    }
    files["test_batch"] = _batch(test_images, test_labels, "testing batch 1 of 1", bytes_keys=bytes_keys)
    files["batches.meta"] = {
        "num_cases_per_batch": len(parts[0]),
        "label_names": CIFAR_LABEL_NAMES,
        "num_vis": 3072,
    }
    for name, obj in files.items():
        blob = pickle.dumps(obj, protocol=2)
        (folder / name).write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return train_images, test_images


def decode(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class, index) of each image from its first channel's top-left code pixels, given float [0, 1]
    images ``(k, C, H, W)`` cropped to the source image."""
    code = np.rint(region[:, 0, 0, :3] * 255).astype(np.int64)
    return code[:, 0], code[:, 1] + 256 * code[:, 2]
