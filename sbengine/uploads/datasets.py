"""Checking uploaded evaluation data: .npz (``allow_pickle=False``; every member's .npy header is read and
checked against its declared size before the array is) or safetensors, keys ``x``/``y`` (+ ``split``) or
``x_train``/``y_train``/``x_val``/``y_val``/``x_test``/``y_test``; finite float inputs, integer labels in
range, and the declared feature blocks resolved to canonical index sets. A table (CSV, Parquet: tables.py)
or an image archive (zip, tar: images.py) takes the same path once read. The result is saved in the
engine's own format (sbengine Dataset: arrays.npz + dataset.json), so audits read it unchanged.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

from sbengine.uploads.formats import Rejected, inspect_zip, parse_safetensors_header
from sbengine.uploads.messages import listed, one_line

SPLITS = ("train", "val", "test")

_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: never object, structured, strings or complex


def _npz_arrays(path: Path, max_bytes: int) -> dict[str, Any]:
    import numpy as np

    members = inspect_zip(path, max_total_bytes=max_bytes, what="the .npz file")
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for member in members:
            if not member.name.endswith(".npy") or "/" in member.name:
                raise Rejected(f"the .npz member {member.name[:100]!r} is not an array (.npy)")
            key = member.name[: -len(".npy")]
            if key in arrays:
                raise Rejected(f"the .npz file holds the array {key[:100]!r} twice")
            with archive.open(member.name) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        array_shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        array_shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                except ValueError as exc:
                    raise Rejected(f"array {key[:100]!r}: unreadable .npy header: {one_line(exc)}") from None
                if dtype.hasobject or (
                    dtype.kind not in _ARRAY_KINDS and not (key == "split" and dtype.kind == "U")
                ):
                    raise Rejected(
                        f"array {key[:100]!r} has dtype {dtype}; numbers only (no objects or pickles)"
                    )
                needed = math.prod(array_shape) * dtype.itemsize
                if needed > member.size:
                    raise Rejected(
                        f"array {key[:100]!r} claims shape {tuple(array_shape)} ({needed} bytes) "
                        f"but its member holds {member.size} bytes"
                    )
            with archive.open(member.name) as fh:
                try:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise Rejected(f"array {key[:100]!r} cannot be read: {one_line(exc)}") from None
    return arrays


def _safetensors_arrays(path: Path) -> dict[str, Any]:
    header = parse_safetensors_header(path)
    for name, info in header.tensors.items():
        if info.dtype in ("BF16",):
            raise Rejected(f"array {name[:100]!r}: bfloat16 is not supported for datasets; use float32")
    from safetensors.numpy import load_file

    return load_file(str(path))


def _split_arrays(arrays: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    import numpy as np

    split_keys = {f"{a}_{s}" for a in ("x", "y") for s in SPLITS}
    plain = {"x", "y", "split"}
    keys = set(arrays)
    if keys & plain and keys & split_keys or not keys <= plain | split_keys:
        unknown = sorted(keys - plain - split_keys) or sorted(keys)
        raise Rejected(
            f"unexpected arrays {listed(unknown)}: give 'x' and 'y' (and optionally 'split'), or "
            "'x_train'/'y_train', 'x_val'/'y_val', 'x_test'/'y_test'"
        )
    if keys & plain:
        if not {"x", "y"} <= keys:
            raise Rejected("the file needs both an 'x' (inputs) and a 'y' (labels) array")
        x, y = arrays["x"], arrays["y"]
        _check_pair("", x, y)
        if "split" not in arrays:
            return {"test": (x, y)}
        split = arrays["split"]
        if split.ndim != 1 or split.shape[0] != x.shape[0]:
            raise Rejected(
                f"'split' must be 1-D with one entry per row of x ({x.shape[0]}), got {split.shape}"
            )
        if split.dtype.kind == "U":
            codes = np.full(split.shape, -1, dtype=np.int64)
            for i, name in enumerate(SPLITS):
                codes[split == name] = i
        elif split.dtype.kind in "iu":
            codes = split.astype(np.int64)
        else:
            raise Rejected("'split' must hold 0/1/2 or 'train'/'val'/'test' for each row")
        if ((codes < 0) | (codes > 2)).any():
            raise Rejected("'split' must hold 0/1/2 or 'train'/'val'/'test' for each row")
        return {name: (x[codes == i], y[codes == i]) for i, name in enumerate(SPLITS) if (codes == i).any()}
    out = {}
    for name in SPLITS:
        have = {f"x_{name}", f"y_{name}"} & keys
        if len(have) == 1:
            raise Rejected(f"'{have.pop()}' needs its partner ({'y' if f'x_{name}' in keys else 'x'}_{name})")
        if have:
            _check_pair(f"_{name}", arrays[f"x_{name}"], arrays[f"y_{name}"])
            out[name] = (arrays[f"x_{name}"], arrays[f"y_{name}"])
    return out


def _check_pair(suffix: str, x: Any, y: Any) -> None:
    if x.ndim < 2:
        raise Rejected(
            f"'x{suffix}' must have one row per example and at least one feature, got shape {x.shape}"
        )
    if x.dtype.kind not in "iuf":
        raise Rejected(f"'x{suffix}' must hold numbers (int or float), got {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise Rejected(
            f"'y{suffix}' must be 1-D with one label per row of x{suffix} ({x.shape[0]}), got {y.shape}"
        )
    if y.dtype.kind not in "iu":
        raise Rejected(f"'y{suffix}' must hold integer class labels, got {y.dtype}")
    if x.shape[0] == 0:
        raise Rejected(f"'x{suffix}' has no rows")


def _blocks(declared: list[dict[str, Any]], input_shape: tuple[int, ...]) -> list[Any]:
    from sbengine.data.dataset import FeatureBlock, image_region_indices

    size = math.prod(input_shape)
    blocks = []
    for i, block in enumerate(declared):
        field = f"body.blocks.{i}"
        if block.get("columns") is not None:
            raise Rejected("'columns' name a table's columns; this upload is not a table", field=field)
        if block.get("mask") is not None:
            raise Rejected(
                "a mask block needs an image archive with masks (masks/<the image's path>.png)", field=field
            )
        if block.get("indices") is not None:
            indices = block["indices"]
            bad = next((j for j in indices if not 0 <= j < size), None)
            if bad is not None:
                raise Rejected(
                    f"index {bad} is out of range: the inputs have {size} coordinates (0..{size - 1})",
                    field=f"{field}.indices",
                )
            if len(set(indices)) != len(indices):
                raise Rejected("must not repeat an index", field=f"{field}.indices")
            blocks.append(FeatureBlock(name=block["name"], kind="indices", indices=tuple(indices)))
            continue
        if len(input_shape) != 3:
            raise Rejected(
                f"channel/row/column boxes need image inputs (C, H, W); these inputs are {input_shape}: "
                "give 'indices' instead",
                field=field,
            )
        box = {k: block.get(k) for k in ("channels", "rows", "cols")}
        for axis, (key, value) in enumerate(box.items()):
            if value is not None and value[1] > input_shape[axis]:
                raise Rejected(
                    f"[{value[0]}, {value[1]}) reaches past the {input_shape[axis]} {key} of the inputs "
                    f"{input_shape}",
                    field=f"{field}.{key}",
                )
        indices = image_region_indices(
            input_shape, **{k: tuple(v) if v is not None else None for k, v in box.items()}
        )
        params = {k: list(v) for k, v in box.items() if v is not None}
        blocks.append(FeatureBlock(name=block["name"], kind="image_region", indices=indices, params=params))
    return blocks


def check_dataset(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from sbengine.data.dataset import Dataset

    path, max_bytes, fmt = Path(request["path"]), int(request["max_bytes"]), request["format"]
    read: dict[str, Any] = {}
    if fmt in ("csv", "parquet"):
        from sbengine.uploads.tables import read_table

        read = read_table(request, path, fmt)
        splits = read["splits"]
    elif fmt == "tar" or (fmt == "zip" and not _is_npz(path, max_bytes)):
        from sbengine.uploads.images import read_images

        read = read_images(request, path, fmt)
        splits = read["splits"]
    else:
        arrays = _npz_arrays(path, max_bytes) if fmt == "zip" else _safetensors_arrays(path)
        splits = _split_arrays(arrays)
        del arrays
    shapes = {name: tuple(x.shape[1:]) for name, (x, _) in splits.items()}
    input_shape = next(iter(shapes.values()))
    if any(s != input_shape for s in shapes.values()):
        raise Rejected(f"the splits' inputs differ in shape: {shapes}")
    max_samples = int(request["max_samples"])
    clean = {}
    for name, (x, y) in splits.items():
        if x.shape[0] > max_samples:
            raise Rejected(
                f"the {name} split has {x.shape[0]} rows; this server's limit is {max_samples} "
                "(SBAUDIT_MAX_SAMPLES)"
            )
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x32)
        if not finite.all():
            row = int(np.argwhere(~finite.reshape(x32.shape[0], -1).all(axis=1))[0][0])
            raise Rejected(f"the {name} inputs contain NaN or infinite values (first in row {row})")
        clean[name] = (x32, np.ascontiguousarray(y, dtype=np.int64))
    del splits
    labels = np.concatenate([y for _, y in clean.values()])
    low, high = int(labels.min()), int(labels.max())
    declared_classes = request.get("num_classes")
    num_classes = int(declared_classes) if declared_classes is not None else max(high + 1, 2)
    if "num_classes" in read and declared_classes is None:  # an image archive: one class per folder
        num_classes = max(int(read["num_classes"]), 2)
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise Rejected(
            f"label {bad} is outside 0..{num_classes - 1}"
            + (" (num_classes)" if declared_classes is not None else ""),
            field="body.num_classes" if declared_classes is not None else "body.file",
        )
    if "blocks" in read:
        blocks = read["blocks"]
    elif read.get("masks") or any(b.get("mask") for b in request["blocks"]):
        from sbengine.uploads.images import mask_blocks

        blocks = mask_blocks(request["blocks"], bool(read.get("masks")))
    else:
        blocks = _blocks(request["blocks"], input_shape)
    simple = request.get("simple_blocks") or [0]
    dataset = Dataset(
        name=request.get("name") or "uploaded dataset",
        splits=clean,
        input_shape=input_shape,
        num_classes=num_classes,
        blocks=blocks,
        simple_blocks=list(simple),
        rotation=None,
        seed=0,
        spec={"kind": "upload", "sha256": request.get("sha256"), **read.get("spec", {})},
        masks=read.get("masks") or {},
        feature_names=read.get("feature_names"),
        storage="uint8" if "masks" in read else "float32",
    )
    dataset.save(Path(request["output"]))
    name = f"images ({fmt})" if "masks" in read else {"zip": "npz"}.get(fmt, fmt)
    description = dataset.describe()
    kept = read.get("spec", {})
    classes = (kept.get("images") or kept.get("table") or {}).get("classes")
    if classes:
        description["classes"] = classes
    return {"description": description, "format": name}


def _is_npz(path: Path, max_bytes: int) -> bool:
    """A zip with ``.npy`` members is numpy.savez's (its reader names any other member); any other zip is
    read as an image archive."""
    members = inspect_zip(path, max_total_bytes=max_bytes, what="the zip archive")
    return any(m.name.endswith(".npy") for m in members)
