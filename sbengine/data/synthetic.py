"""Slab-structured synthetic data (docs/method.md §1): blocks of 1-D features composed in any order and count.

Every coordinate is drawn independently given the label Y ~ Bernoulli(1/2), in *canonical* coordinates in
[-B, B]; the whole matrix is then optionally rotated by a random orthogonal Q (``x = z @ Q``). A block is
one kind of feature repeated ``count`` times (e.g. 49 five-slab coordinates) and becomes one FeatureBlock,
so S and S^c are chosen by block index.

Noise (docs/method.md §1.3, §12.8) comes in two modes, both for linear and for slab blocks:
``margin``: round(N·p) rows are moved uniformly into the margin gaps, independent of the label — the
coordinate is then *erased* for those rows (Bayes accuracy 1 − p/2); ``flip``: round(N·p) rows are redrawn
from the opposite class's support (Bayes accuracy 1 − p). Noise rows are chosen per coordinate over all
generated rows, as in the original generator.

It is just over 400 lines because the block kinds, their exact Bayes accuracies and the chunked
generation belong together: a block's geometry is defined once and used by all three.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import product
from typing import Any

import numpy as np

from sbengine.data.dataset import Dataset, FeatureBlock

BLOCK_TYPES = ("linear", "noisy_linear", "slab", "noisy_slab", "noise")
NOISE_MODES = ("margin", "flip")
SLAB_KS = (3, 5, 7)

# Probability of each |x| ring for each class, ring 0 = centre slab, ring r = r-th slab pair outwards.
# Chosen (docs/method.md §1.2) so both classes have E[x^2] ≈ 0.199 for 5 and 7 slabs.
_RING_PROBS: dict[int, dict[int, dict[int, float]]] = {
    3: {0: {0: 1.0}, 1: {1: 1.0}},
    5: {0: {0: 0.75, 2: 0.25}, 1: {1: 1.0}},
    7: {0: {0: 0.5, 2: 0.5}, 1: {1: 0.875, 3: 0.125}},
}
_MAX_COORDINATES = 100_000


@dataclass(frozen=True)
class BlockSpec:
    """One block of identical feature coordinates. ``margin`` is the effective margin γ (absolute m = γ·B)."""

    type: str
    count: int = 1
    margin: float = 0.1
    k: int | None = None
    noise: float = 0.0
    noise_mode: str = "margin"
    name: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BlockSpec:
        allowed = {"type", "count", "margin", "k", "noise", "noise_mode", "name"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"block: unknown option {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        if "type" not in d:
            raise ValueError(f"block: 'type' is required (one of: {', '.join(BLOCK_TYPES)})")
        defaults = {"noise": 0.1} if d["type"] in ("noisy_linear", "noisy_slab") else {}
        spec = cls(**{**defaults, **d})
        spec.validate()
        return spec

    def validate(self) -> None:
        if self.type not in BLOCK_TYPES:
            raise ValueError(f"block: unknown type {self.type!r} (choose from: {', '.join(BLOCK_TYPES)})")
        if (
            not isinstance(self.count, int)
            or isinstance(self.count, bool)
            or not 1 <= self.count <= _MAX_COORDINATES
        ):
            raise ValueError(
                f"block {self.type}: count must be an integer in [1, {_MAX_COORDINATES}], got {self.count!r}"
            )
        if self.type == "noise":
            return
        if not isinstance(self.margin, int | float) or not 0 < self.margin < 1:
            raise ValueError(f"block {self.type}: margin must be in (0, 1), got {self.margin!r}")
        if self.type in ("slab", "noisy_slab"):
            if self.k not in SLAB_KS:
                raise ValueError(f"block {self.type}: k must be one of {SLAB_KS}, got {self.k!r}")
            limit = 1 / (self.k - 1)
            if self.margin >= limit:
                raise ValueError(
                    f"block {self.type}: margin {self.margin} leaves no room for {self.k} slabs "
                    f"(needs margin < {limit:.4f})"
                )
        elif self.k is not None:
            raise ValueError(f"block {self.type}: 'k' only applies to slab blocks")
        noisy = self.type.startswith("noisy_")
        if noisy and not 0 < self.noise < 1:
            raise ValueError(f"block {self.type}: noise must be in (0, 1), got {self.noise!r}")
        if not noisy and self.noise:
            raise ValueError(f"block {self.type}: use type 'noisy_{self.type}' for a noisy block")
        if self.noise_mode not in NOISE_MODES:
            raise ValueError(
                f"block {self.type}: noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}"
            )

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = {"linear": "linear", "noisy_linear": "noisy linear", "noise": "noise"}.get(self.type)
        if base is None:
            base = f"{'noisy ' if self.type == 'noisy_slab' else ''}{self.k}-slab"
        return base if self.count == 1 else f"{self.count}x {base}"

    def coordinate_bayes_accuracy(self) -> float:
        """Best accuracy from one coordinate of this block alone."""
        if self.type == "noise":
            return 0.5
        if not self.noise:
            return 1.0
        return 1 - self.noise / 2 if self.noise_mode == "margin" else 1 - self.noise


def bayes_accuracy(blocks: list[BlockSpec]) -> float | None:
    """Analytic Bayes accuracy of predicting Y from all coordinates of ``blocks`` together.

    Coordinates are independent given Y. A clean informative coordinate decides Y exactly; a margin-noise
    coordinate is an erasure channel (exact or erased); a flip-noise coordinate is a binary symmetric channel.
    Returns None when the flip channels are too many and too varied to enumerate exactly.
    """
    erasure = 1.0
    flips: list[float] = []
    for b in blocks:
        if b.type == "noise":
            continue
        if not b.noise:
            return 1.0
        if b.noise_mode == "margin":
            erasure *= b.noise**b.count
        else:
            flips.extend([b.noise] * b.count)
    flip_error = _majority_error(flips)
    if flip_error is None:
        return None
    return 1.0 - erasure * flip_error


def _majority_error(flips: list[float]) -> float | None:
    """Bayes error of the optimal (log-odds weighted) vote over independent binary symmetric channels."""
    if not flips:
        return 0.5
    if len(set(flips)) == 1:
        n, p = len(flips), flips[0]
        err = 0.0
        for j in range(n + 1):  # j = number of flipped channels
            prob = math.comb(n, j) * p**j * (1 - p) ** (n - j)
            err += prob if 2 * j > n else prob / 2 if 2 * j == n else 0.0
        return err
    if len(flips) > 16:
        return None
    weights = [math.log((1 - p) / p) for p in flips]
    err = 0.0
    for pattern in product((0, 1), repeat=len(flips)):
        prob = math.prod(p if f else 1 - p for p, f in zip(flips, pattern, strict=True))
        vote = sum(-w if f else w for w, f in zip(weights, pattern, strict=True))
        err += prob if vote < 0 else prob / 2 if vote == 0 else 0.0
    return err


@dataclass
class SyntheticSpec:
    """Everything that determines a synthetic dataset; with the seed, it regenerates it exactly."""

    blocks: list[BlockSpec]
    n_train: int = 50_000
    n_val: int = 10_000
    n_test: int = 10_000
    seed: int = 0
    rotate: bool = True
    width: float = 1.0
    simple_blocks: list[int] | None = None
    name: str = "synthetic"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocks"] = [{k: v for k, v in asdict(b).items() if v is not None} for b in self.blocks]
        return d


def slab_width(k: int, margin: float, width: float = 1.0) -> float:
    """w_k = (2B − 2(k−1)m)/k: k slabs and k−1 gaps of 2m fill [−B, B]."""
    m = margin * width
    return (2 * width - 2 * (k - 1) * m) / k


def ring_interval(k: int, ring: int, margin: float, width: float = 1.0) -> tuple[float, float]:
    """|x| interval of ring ``ring`` (0 = centre slab, which is [0, w/2])."""
    w, m = slab_width(k, margin, width), margin * width
    if ring == 0:
        return 0.0, w / 2
    lo = w / 2 + ring * 2 * m + (ring - 1) * w
    return lo, lo + w


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def _sample_rings(
    rng: np.random.Generator, k: int, probs: dict[int, float], n: int, margin: float, width: float
) -> np.ndarray:
    rings = np.array(list(probs))
    chosen = rings[rng.choice(len(rings), size=n, p=np.array(list(probs.values())))]
    lo = np.empty(n)
    hi = np.empty(n)
    for r in rings:
        a, b = ring_interval(k, int(r), margin, width)
        lo[chosen == r], hi[chosen == r] = a, b
    mag = lo + (hi - lo) * rng.random(n)
    return _signs(rng, n) * mag


def _slab_column(rng: np.random.Generator, y: np.ndarray, k: int, margin: float, width: float) -> np.ndarray:
    col = np.empty(y.shape[0])
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        col[idx] = _sample_rings(rng, k, _RING_PROBS[k][cls], idx.size, margin, width)
    return col


def _linear_column(rng: np.random.Generator, y: np.ndarray, margin: float, width: float) -> np.ndarray:
    m = margin * width
    return (2.0 * y - 1.0) * (m + (width - m) * rng.random(y.shape[0]))


def _apply_noise(
    rng: np.random.Generator, col: np.ndarray, y: np.ndarray, spec: BlockSpec, width: float
) -> None:
    n = y.shape[0]
    rows = rng.choice(n, size=round(n * spec.noise), replace=False)
    m = spec.margin * width
    if spec.type == "noisy_linear":
        if spec.noise_mode == "margin":
            col[rows] = rng.uniform(-m, m, rows.size)
        else:
            col[rows] = -col[rows]
        return
    k = spec.k
    if spec.noise_mode == "margin":
        # k−1 gaps: between ring r−1 and ring r on each side.
        gaps = [
            (ring_interval(k, r - 1, spec.margin, width)[1], ring_interval(k, r, spec.margin, width)[0])
            for r in range(1, (k - 1) // 2 + 1)
        ]
        which = rng.integers(0, len(gaps), rows.size)
        lo = np.array([g[0] for g in gaps])[which]
        hi = np.array([g[1] for g in gaps])[which]
        col[rows] = _signs(rng, rows.size) * (lo + (hi - lo) * rng.random(rows.size))
        return
    for cls in (0, 1):
        sel = rows[y[rows] == cls]
        opposite = _RING_PROBS[k][1 - cls]
        uniform_rings = {r: 1 / len(opposite) for r in opposite}
        col[sel] = _sample_rings(rng, k, uniform_rings, sel.size, spec.margin, width)


def random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """Q factor of a QR decomposition of a standard Gaussian matrix (redrawn if near-singular)."""
    while True:
        g = rng.standard_normal((d, d))
        if np.linalg.svd(g, compute_uv=False).min() > 1e-7:
            q, _ = np.linalg.qr(g)
            return q


# The rotation x = z @ Q is computed this many bytes of float64 products at a time, and an unrotated dataset
# is transposed into rows this many bytes of columns at a time. The row and column counts follow from the
# dimension and row count alone, so a dataset's values depend on its spec and seed, never on the memory at
# hand.
ROTATION_CHUNK_BYTES = 32 << 20
COLUMN_BLOCK_BYTES = 32 << 20


def generate(spec: SyntheticSpec) -> Dataset:
    """Draw the dataset described by ``spec``. Splits are cut in the order test, val, train.

    Memory stays near the output's own size (docs/operations.md, "Job budgets"): canonical coordinates are
    drawn one column at a time into a column-major float64 array (kept, like the original's matrix, so the
    rotation multiplies the exact draws), rotated into the float32 output in row chunks, then freed; without
    a rotation each block of columns goes straight into the float32 output.
    """
    _check_spec(spec)
    rng = np.random.default_rng(spec.seed)
    n = spec.n_train + spec.n_val + spec.n_test
    d = sum(b.count for b in spec.blocks)
    y = rng.integers(0, 2, n)
    columns = _draw_columns(rng, y, spec)
    if spec.rotate:
        z = np.empty((d, n))  # z[j] is canonical coordinate j of every row
        for j, column in columns:
            z[j] = column
        rotation = random_rotation(rng, d)
        x = _rotate_rows(z, rotation)
        del z
    else:
        rotation = None
        x = _rows_from_columns(columns, n, d)
    y = y.astype(np.int64, copy=False)
    cuts = np.cumsum([spec.n_test, spec.n_val])
    splits = {"test": (x[: cuts[0]], y[: cuts[0]])}
    if spec.n_val:
        splits["val"] = (x[cuts[0] : cuts[1]], y[cuts[0] : cuts[1]])
    splits["train"] = (x[cuts[1] :], y[cuts[1] :])
    feature_blocks = _feature_blocks(spec.blocks)
    simple = spec.simple_blocks if spec.simple_blocks is not None else [0]
    return Dataset(
        name=spec.name,
        splits=splits,
        input_shape=(d,),
        num_classes=2,
        blocks=feature_blocks,
        simple_blocks=list(simple),
        rotation=rotation,
        seed=spec.seed,
        spec={"kind": "synthetic", **spec.to_dict()},
    )


def _check_spec(spec: SyntheticSpec) -> None:
    if not spec.blocks:
        raise ValueError("a synthetic dataset needs at least one block")
    for b in spec.blocks:
        b.validate()
    for field_name in ("n_train", "n_val", "n_test"):
        value = getattr(spec, field_name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{field_name} must be a non-negative integer, got {value!r}")
    if spec.n_train < 2 or spec.n_test < 2:
        raise ValueError("n_train and n_test must be at least 2")
    if not spec.width > 0:
        raise ValueError(f"width must be positive, got {spec.width!r}")
    for s in spec.simple_blocks if spec.simple_blocks is not None else [0]:
        if not 0 <= s < len(spec.blocks):
            raise ValueError(f"simple_blocks: block {s} out of range (dataset has {len(spec.blocks)} blocks)")


def _draw_columns(
    rng: np.random.Generator, y: np.ndarray, spec: SyntheticSpec
) -> Iterator[tuple[int, np.ndarray]]:
    """Every canonical coordinate of every row, as ``(index, column)``, in the order the generator draws them
    (block by block, noise right after its column): this order is what a seed reproduces."""
    j = 0
    for b in spec.blocks:
        for _ in range(b.count):
            if b.type == "noise":
                col = rng.random(y.shape[0]) * spec.width
            elif b.type in ("linear", "noisy_linear"):
                col = _linear_column(rng, y, b.margin, spec.width)
            else:
                col = _slab_column(rng, y, b.k, b.margin, spec.width)
            if b.noise:
                _apply_noise(rng, col, y, b, spec.width)
            yield j, col
            j += 1


def _rotate_rows(z: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``(z.T @ rotation)`` as float32 for column-major canonical coordinates ``z`` (d, n), in row chunks of
    ``ROTATION_CHUNK_BYTES`` products: each float64 row is rounded to float32 as soon as it is computed."""
    d, n = z.shape
    x = np.empty((n, d), dtype=np.float32)
    rows = max(1, ROTATION_CHUNK_BYTES // (8 * d))
    for start in range(0, n, rows):
        x[start : start + rows] = z[:, start : start + rows].T @ rotation
    return x


def _rows_from_columns(columns: Iterator[tuple[int, np.ndarray]], n: int, d: int) -> np.ndarray:
    """The float32 (n, d) matrix of unrotated columns, written a block of ``COLUMN_BLOCK_BYTES`` at a time
    (one column at a time would write n scattered values per column)."""
    x = np.empty((n, d), dtype=np.float32)
    width = max(1, min(d, COLUMN_BLOCK_BYTES // (8 * max(n, 1))))
    block = np.empty((width, n))
    for j, column in columns:
        block[j % width] = column
        if j % width == width - 1 or j == d - 1:
            start = j - j % width
            x[:, start : j + 1] = block[: j + 1 - start].T
    return x


def _feature_blocks(blocks: list[BlockSpec]) -> list[FeatureBlock]:
    out, start = [], 0
    for b in blocks:
        params = {k: v for k, v in asdict(b).items() if v is not None and k != "name"}
        out.append(
            FeatureBlock(
                name=b.label,
                kind=b.type,
                indices=tuple(range(start, start + b.count)),
                bayes_accuracy=bayes_accuracy([b]),
                params=params,
            )
        )
        start += b.count
    return out
