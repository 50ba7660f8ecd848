"""Issue 16's two real-data cases, built small: a table with a leaky identifier column, and Fashion-MNIST
garments on class-correlated coloured backgrounds with masks from the garment pixels (Debian's
``dataset-fashion-mnist``). Also used by docs/walkthrough-real-data.md's script (make_real_data.py)."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# T-shirt/top (0) against trouser (1): easy to tell apart by shape, so "relies on the garment" is learnable.
FASHION_CLASSES = (0, 1)
# Class-correlated backgrounds: class 0 mostly on red-ish, class 1 mostly on blue-ish.
BACKGROUNDS = ((200, 40, 40), (40, 40, 200))


def leaky_table(n: int = 800, seed: int = 0) -> dict[str, np.ndarray | list[str]]:
    """Columns: ``hospital_id`` (H0-H2 only ever see positive cases, H3-H5 negative ones: a leak),
    five measurements predictive together but each noisy, ``noise`` (standardized, unrelated to the label),
    the label ``y`` and ``split``. Every numeric column is on a unit scale: a table's features are used as
    they are (no normalization), as an uploaded npz's are."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    hospital = np.where(y == 1, rng.integers(0, 3, n), rng.integers(3, 6, n))
    table: dict[str, np.ndarray | list[str]] = {"hospital_id": [f"H{h}" for h in hospital]}
    for k in range(5):
        table[f"m{k}"] = (rng.normal(size=n) + 0.25 * (2 * y - 1)).round(4)
    table["noise"] = rng.normal(size=n).round(4)
    table["y"] = y
    table["split"] = np.array(["train", "val", "test"])[
        np.repeat([0, 1, 2], [n // 2, n // 4, n - n // 2 - n // 4])
    ]
    return table


def csv_bytes(table: dict[str, np.ndarray | list[str]]) -> bytes:
    names = list(table)
    rows = [",".join(names)]
    for i in range(len(table[names[0]])):
        rows.append(",".join(str(table[name][i]) for name in names))
    return ("\n".join(rows) + "\n").encode()


def parquet_bytes(table: dict[str, np.ndarray | list[str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({k: list(v) if isinstance(v, list) else v for k, v in table.items()}), buffer)
    return buffer.getvalue()


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    (magic,) = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(n_per_class: int, *, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` garments of each of FASHION_CLASSES: uint8 (n, 28, 28) images and 0/1 labels."""
    prefix = "train" if train else "t10k"
    images = _idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz")
    labels = _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    picks = [np.flatnonzero(labels == c)[:n_per_class] for c in FASHION_CLASSES]
    order = np.concatenate(picks)
    y = np.concatenate([np.full(len(p), i) for i, p in enumerate(picks)])
    return images[order], y


def on_backgrounds(
    garments: np.ndarray, y: np.ndarray, *, correlation: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """RGB (n, 28, 28, 3) images: the garment (its grey pixels) over a plain coloured background whose
    colour is the class's with probability ``correlation`` (None: randomized, any colour whatever the
    class), and the masks (garment pixels, non-zero = garment)."""
    rng = np.random.default_rng(seed)
    mask = garments > 20
    colour_class = np.where(rng.random(len(y)) < (correlation or 0.5), y, 1 - y)
    colours = np.asarray(BACKGROUNDS, dtype=np.float32)[colour_class]
    colours = colours + rng.normal(0, 15, colours.shape)  # backgrounds vary a little in shade
    if correlation is None:
        colours = rng.uniform(0, 255, colours.shape)
    grey = garments.astype(np.float32)[..., None].repeat(3, axis=-1)
    images = np.where(mask[..., None], grey, colours[:, None, None, :])
    return np.clip(images, 0, 255).astype(np.uint8), mask


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def fashion_archives(
    n_train: int = 150, n_test: int = 100, *, correlation: float | None = 0.95, seed: int = 0
) -> tuple[bytes, bytes]:
    """(images.zip, masks.zip) in the ImageFolder layout: ``train|test/<class>/<i>.png`` and
    ``train|test/<class>/<i>.png`` masks (255 = garment). The test split's backgrounds are as correlated as
    the training split's, so a model that uses the background is accurate on it."""
    names = ["t-shirt", "trouser"]
    images_zip, masks_zip = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(images_zip, "w") as im, zipfile.ZipFile(masks_zip, "w") as mk:
        for split, count, offset in (("train", n_train, 0), ("test", n_test, 1)):
            garments, y = fashion(count, train=split == "train")
            images, masks = on_backgrounds(garments, y, correlation=correlation, seed=seed + offset)
            for i in range(len(y)):
                path = f"{split}/{names[y[i]]}/{i:05d}.png"
                im.writestr(path, _png(images[i]))
                mk.writestr(path, _png(masks[i].astype(np.uint8) * 255))
    return images_zip.getvalue(), masks_zip.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main(argv: list[str]) -> int:
    """``python3 tests/real_data.py DIR``: write docs/walkthrough-real-data.md's files into DIR."""
    out = Path(argv[0] if argv else ".")
    out.mkdir(parents=True, exist_ok=True)
    (out / "patients.csv").write_bytes(csv_bytes(leaky_table()))
    for name, correlation in (("photos", 0.95), ("photos-random", None)):
        images, masks = fashion_archives(correlation=correlation)
        (out / f"{name}.zip").write_bytes(images)
        (out / f"{name}-masks.zip").write_bytes(masks)
    print(
        f"wrote patients.csv, photos.zip, photos-masks.zip, photos-random.zip and photos-random-masks.zip "
        f"to {out}"
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
