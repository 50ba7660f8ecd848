"""The in-memory dataset every other part of sbengine works on.

A dataset is a set of named splits (arrays), the input shape the model sees, and the *feature blocks*: named
sets of coordinates in canonical space. Canonical space is the flattened input before the optional random
rotation Q (rows are rotated as ``x = z @ Q``). Randomization and dependence metrics act on blocks in
canonical space and map back, so synthetic vectors and images (where a block is a region of pixels and
there is no rotation) use one mechanism.

A block is a fixed set of coordinates (``indices``: the same for every example), or a per-example region
(kind ``mask``: ``params["mask"]`` is ``"region"`` or ``"complement"`` of the split's boolean mask, one
``(H, W)`` mask per image, e.g. an object's pixels and its background). ``selection`` turns both into a
boolean ``(rows, coordinates)`` mask, so randomization composites through one mechanism: a fixed block is a
constant mask (docs/method.md, mixed-random).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ARRAYS_FILE = "arrays.npz"
DESCRIPTION_FILE = "dataset.json"
SPLITS = ("train", "val", "test")
MASK_KIND = "mask"


@dataclass(frozen=True)
class FeatureBlock:
    """A named group of canonical coordinates that together form one feature (e.g. the linear coordinate,
    the 49 slab coordinates, or the MNIST half of an image)."""

    name: str
    kind: str
    indices: tuple[int, ...]
    bayes_accuracy: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["indices"] = list(self.indices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureBlock:
        return cls(
            name=d["name"],
            kind=d["kind"],
            indices=tuple(int(i) for i in d["indices"]),
            bayes_accuracy=d.get("bayes_accuracy"),
            params=dict(d.get("params") or {}),
        )


@dataclass
class Dataset:
    """Arrays per split plus what is needed to interpret them.

    ``splits[name] = (x, y)`` with ``x`` float32 of shape ``(n, *input_shape)`` and ``y`` int64 of shape
    ``(n,)``. ``simple_blocks`` are the indices (into ``blocks``) that form S by default.
    """

    name: str
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    input_shape: tuple[int, ...]
    num_classes: int
    blocks: list[FeatureBlock]
    simple_blocks: list[int]
    rotation: np.ndarray | None
    seed: int
    spec: dict[str, Any] = field(default_factory=dict)
    # Per split, a boolean (n, H, W) mask for image inputs whose blocks include per-example regions.
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    # Names of the flattened input's coordinates (a table's columns after one-hot encoding), when known.
    feature_names: list[str] | None = None
    # "uint8": inputs are pixels / 255 and are stored as uint8 (4x smaller); loading restores float32.
    storage: str = "float32"

    @property
    def num_features(self) -> int:
        return int(np.prod(self.input_shape))

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no {name!r} split (has: {', '.join(self.splits)})")
        return self.splits[name]

    def block_indices(self, block_ids: list[int]) -> list[int]:
        """Canonical coordinates covered by the given blocks, in order, without repeats (fixed blocks only:
        a per-example region has no fixed coordinates, see ``selection``)."""
        out: list[int] = []
        seen: set[int] = set()
        for b in block_ids:
            if not 0 <= b < len(self.blocks):
                raise IndexError(f"block {b} out of range: dataset has {len(self.blocks)} blocks")
            if self.blocks[b].kind == MASK_KIND:
                raise ValueError(
                    f"block {self.blocks[b].name!r} is a per-example region (mask); this check needs blocks "
                    "of fixed coordinates (indices, boxes or columns)"
                )
            for i in self.blocks[b].indices:
                if i not in seen:
                    seen.add(i)
                    out.append(i)
        return out

    @property
    def has_regions(self) -> bool:
        return any(b.kind == MASK_KIND for b in self.blocks)

    def selection(self, block_ids: list[int], split: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the coordinates the given blocks cover: ``(1, D)`` when every block is fixed (the
        same coordinates for every row), else ``(n, D)`` with each row's own region (``rows`` picks rows of
        the split). A mask block covers every channel of its pixels."""
        if not self.has_regions or not any(self.blocks[b].kind == MASK_KIND for b in block_ids):
            out = np.zeros((1, self.num_features), dtype=bool)
            out[0, self.block_indices(block_ids)] = True
            return out
        if split not in self.masks:
            raise KeyError(f"dataset {self.name!r} has no masks for its {split!r} split")
        region = self.masks[split] if rows is None else self.masks[split][rows]
        n = region.shape[0]
        channels = self.input_shape[0]
        out = np.zeros((n, self.num_features), dtype=bool)
        for b in block_ids:
            block = self.blocks[b]
            if block.kind == MASK_KIND:
                side = region if block.params.get("mask") == "region" else ~region
                out |= np.broadcast_to(side[:, None], (n, channels, *side.shape[1:])).reshape(n, -1)
            else:
                out[:, list(block.indices)] = True
        return out

    def complement_blocks(self, block_ids: list[int]) -> list[int]:
        """The blocks not in ``block_ids`` (S^c when ``block_ids`` is S)."""
        chosen = set(block_ids)
        return [i for i in range(len(self.blocks)) if i not in chosen]

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description: everything but the arrays."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "blocks": [b.to_dict() for b in self.blocks],
            "simple_blocks": list(self.simple_blocks),
            "rotated": self.rotation is not None,
            "seed": self.seed,
            "sizes": {k: int(v[1].shape[0]) for k, v in self.splits.items()},
            "spec": self.spec,
            **({"feature_names": list(self.feature_names)} if self.feature_names is not None else {}),
            **({"storage": self.storage, "masks": sorted(self.masks)} if self.storage != "float32" else {}),
        }

    def save(self, directory: str | Path) -> None:
        """Write ``arrays.npz`` (no pickles) and ``dataset.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for split_name, (x, y) in self.splits.items():
            if self.storage == "uint8":  # pixels / 255 in float32 round back to the same byte exactly
                arrays[f"x_{split_name}"] = np.rint(np.asarray(x, dtype=np.float32) * 255).astype(np.uint8)
            else:
                arrays[f"x_{split_name}"] = np.ascontiguousarray(x, dtype=np.float32)
            arrays[f"y_{split_name}"] = np.ascontiguousarray(y, dtype=np.int64)
        for split_name, mask in self.masks.items():
            arrays[f"mask_{split_name}"] = np.ascontiguousarray(mask, dtype=bool)
        if self.rotation is not None:
            arrays["rotation"] = np.ascontiguousarray(self.rotation, dtype=np.float64)
        np.savez(directory / ARRAYS_FILE, **arrays)
        (directory / DESCRIPTION_FILE).write_text(json.dumps(self.describe(), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        directory = Path(directory)
        desc = json.loads((directory / DESCRIPTION_FILE).read_text())
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
            splits = {s: (_inputs(npz[f"x_{s}"]), npz[f"y_{s}"]) for s in SPLITS if f"x_{s}" in npz.files}
            masks = {s: npz[f"mask_{s}"] for s in SPLITS if f"mask_{s}" in npz.files}
            rotation = npz["rotation"] if "rotation" in npz.files else None
        return cls(
            name=desc["name"],
            splits=splits,
            input_shape=tuple(desc["input_shape"]),
            num_classes=int(desc["num_classes"]),
            blocks=[FeatureBlock.from_dict(b) for b in desc["blocks"]],
            simple_blocks=list(desc["simple_blocks"]),
            rotation=rotation,
            seed=int(desc["seed"]),
            spec=desc.get("spec", {}),
            masks=masks,
            feature_names=desc.get("feature_names"),
            storage=desc.get("storage", "float32"),
        )


def _inputs(x: np.ndarray) -> np.ndarray:
    """Stored inputs as the float32 the models read: uint8 pixels become pixels / 255."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    return x


def image_region_indices(
    input_shape: tuple[int, int, int],
    *,
    channels: tuple[int, int] | None = None,
    rows: tuple[int, int] | None = None,
    cols: tuple[int, int] | None = None,
) -> tuple[int, ...]:
    """Flattened (C, H, W) indices of a box; each range is half-open ``(start, stop)``, ``None`` = all."""
    c, h, w = input_shape
    c0, c1 = channels or (0, c)
    r0, r1 = rows or (0, h)
    k0, k1 = cols or (0, w)
    if not (0 <= c0 < c1 <= c and 0 <= r0 < r1 <= h and 0 <= k0 < k1 <= w):
        raise ValueError(f"box channels={channels} rows={rows} cols={cols} is empty or outside {input_shape}")
    grid = np.arange(c * h * w).reshape(c, h, w)[c0:c1, r0:r1, k0:k1]
    return tuple(int(i) for i in grid.ravel())
