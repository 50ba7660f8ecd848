"""MNIST-CIFAR (docs/method.md §2): an MNIST digit stacked on top of a CIFAR-10 image, both predictive.

Each image is 3x64x32: rows 0-31 hold a binarised MNIST digit (zero-padded from 28x28 and copied to three
channels), rows 32-63 a binarised CIFAR-10 image; both halves agree with the label. A network that is
simplicity-biased reads only the MNIST half, which the two blocks ``mnist`` (S) and ``cifar`` (S^c) let
the audits show.

Faithful to the original construction, with these fixes and extensions:
- seeded: every random choice comes from a numpy Generator keyed by (seed, split, purpose), so the same
  arguments give the same arrays, and the unrandomized source keeps its exact pools when the other source is
  randomized (``randomize="mnist"`` changes nothing on the CIFAR side, and vice versa);
- a validation split carved out of the training pairs, so model selection never sees test (§12.3);
- ``cifar_classes=None`` means what the original meant and could not do (§12.2): CIFAR classes 0-4 vs 5-9.
  Any class may be a group of classes, e.g. ``((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))``.

``randomize`` rebuilds the dataset with one source's pools drawn as random halves, which is how the paper
makes its S- and S^c-randomized test sets (§3.3). Those are fresh samples, not permutations of the standard
test set (§12.17); permuting a block of the standard test set is the job of the generic randomization over
``blocks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbengine.data.dataset import Dataset, FeatureBlock, image_region_indices
from sbengine.data.images import default_raw_data_dir, load_cifar10, load_mnist

ClassGroup = int | Sequence[int]
ClassPair = tuple[ClassGroup, ClassGroup]

INPUT_SHAPE = (3, 64, 32)
MNIST_ROWS = (0, 32)
CIFAR_ROWS = (32, 64)
PAD = 2  # 28x28 MNIST -> 32x32
RANDOMIZE = ("mnist", "cifar")
GROUPED_CIFAR = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
CIFAR10_CLASSES = (
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
)
# (mnist_classes, cifar_classes); the first class of each pair is label 0, the second label 1.
VARIANTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "A": ((0, 1), (1, 9)),  # digit 0 + automobile vs digit 1 + truck (the paper's main dataset)
    "B": ((1, 4), (1, 9)),  # digit 1 + automobile vs digit 4 + truck
    "C": ((0, 1), (0, 8)),  # digit 0 + airplane vs digit 1 + ship
}
_SPLIT_KEYS = {"train": 0, "test": 1}
_STREAM_KEYS = {"mnist": 0, "cifar": 1, "shuffle": 2}


def build_mnist_cifar(
    *,
    root: str | Path | None = None,
    mnist_classes: ClassPair = (0, 1),
    cifar_classes: ClassPair | None = (1, 9),
    randomize: str | None = None,
    n_train: int | None = None,
    n_val: int = 0,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Build MNIST-CIFAR from the raw files under ``root`` (default: ``default_raw_data_dir()``).

    ``randomize`` is None, ``"mnist"`` (S-randomized: MNIST half independent of the label) or ``"cifar"``
    (S^c-randomized). ``n_val`` pairs are taken, class-balanced, from the training pairs; ``n_train`` and
    ``n_test`` then pick that many pairs (class-balanced) from what is left, ``None`` meaning all. Asking for
    more than exists is an error rather than a silent shortfall.
    """
    mnist_groups = _class_groups(mnist_classes, "mnist_classes")
    cifar_groups = _class_groups(GROUPED_CIFAR if cifar_classes is None else cifar_classes, "cifar_classes")
    if randomize is not None and randomize not in RANDOMIZE:
        raise ValueError(f"randomize must be None, 'mnist' or 'cifar', got {randomize!r}")
    for arg, value, optional in (
        ("n_train", n_train, True),
        ("n_val", n_val, False),
        ("n_test", n_test, True),
        ("seed", seed, False),
    ):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{arg} must be a non-negative integer, got {value!r}")
    root = Path(root) if root is not None else default_raw_data_dir()

    def pairs(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        train = split == "train"
        mnist = load_mnist(root, train=train, download=download)
        cifar = load_cifar10(root, train=train, download=download)
        m_idx, c_idx, y = _pair_indices(
            mnist[1], cifar[1], mnist_groups, cifar_groups, randomize, seed, split
        )
        return m_idx, c_idx, y, (mnist[0], cifar[0])

    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    m_idx, c_idx, y, images = pairs("train")
    val = _take_balanced(y, np.arange(len(y)), n_val, what="n_val", split="training")
    rest = np.setdiff1d(np.arange(len(y)), val)  # sorted, so the shuffled order is kept
    train = rest if n_train is None else _take_balanced(y, rest, n_train, what="n_train", split="training")
    splits["train"] = (_compose(*images, m_idx[train], c_idx[train]), y[train])
    if n_val:
        splits["val"] = (_compose(*images, m_idx[val], c_idx[val]), y[val])
    del images
    m_idx, c_idx, y, images = pairs("test")
    test = np.arange(len(y))
    if n_test is not None:
        test = _take_balanced(y, test, n_test, what="n_test", split="test")
    splits["test"] = (_compose(*images, m_idx[test], c_idx[test]), y[test])

    spec = {
        "generator": "mnist_cifar",
        "mnist_classes": _jsonable(mnist_groups),
        "cifar_classes": _jsonable(cifar_groups),
        "randomize": randomize,
        "n_train": None if n_train is None else int(n_train),
        "n_val": int(n_val),
        "n_test": None if n_test is None else int(n_test),
        "seed": int(seed),
    }
    return Dataset(
        name=_name(mnist_groups, cifar_groups, randomize),
        splits=splits,
        input_shape=INPUT_SHAPE,
        num_classes=2,
        blocks=[
            _block("mnist", MNIST_ROWS, spec["mnist_classes"]),
            _block("cifar", CIFAR_ROWS, spec["cifar_classes"]),
        ],
        simple_blocks=[0],
        rotation=None,
        seed=int(seed),
        spec=spec,
    )


def build_mnist_cifar_variant(variant: str, **kwargs: Any) -> Dataset:
    """The paper's named variants: ``"A"`` (main), ``"B"`` (digits 1/4), ``"C"`` (airplane/ship)."""
    key = variant.strip().upper().removeprefix("MNIST-CIFAR:")
    if key not in VARIANTS:
        raise ValueError(f"unknown MNIST-CIFAR variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    mnist_classes, cifar_classes = VARIANTS[key]
    return build_mnist_cifar(mnist_classes=mnist_classes, cifar_classes=cifar_classes, **kwargs)


def build_mnist_cifar_from_spec(
    spec: dict[str, Any], *, root: str | Path | None = None, download: bool = True
) -> Dataset:
    """Rebuild a dataset from its ``spec``; where the raw files live is not part of the spec."""
    if spec.get("generator") != "mnist_cifar":
        raise ValueError(f"not an MNIST-CIFAR spec (generator={spec.get('generator')!r})")
    args = {k: v for k, v in spec.items() if k != "generator"}
    return build_mnist_cifar(root=root, download=download, **args)


# --- pairing ---------------------------------------------------------------------------------------------


def _rng(seed: int, split: str, stream: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_KEYS[split], _STREAM_KEYS[stream]])


def _pools(
    labels: np.ndarray,
    groups: tuple[tuple[int, ...], tuple[int, ...]],
    randomize: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(negative, positive) index pools of one source, each in random order.

    Randomized: the first half (rounded down) of the kept images is "negative", the rest "positive",
    whatever their class, which makes this half of the image independent of the label.
    """
    kept = rng.permutation(np.flatnonzero(np.isin(labels, groups[0] + groups[1])))
    if randomize:
        return kept[: len(kept) // 2], kept[len(kept) // 2 :]
    positive = np.isin(labels[kept], groups[1])
    return kept[~positive], kept[positive]


def _pair_indices(
    mnist_labels: np.ndarray,
    cifar_labels: np.ndarray,
    mnist_groups: tuple[tuple[int, ...], tuple[int, ...]],
    cifar_groups: tuple[tuple[int, ...], tuple[int, ...]],
    randomize: str | None,
    seed: int,
    split: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled (MNIST index, CIFAR index, label) triples: i-th of each pool paired, pools cut to the
    smallest of the four so both classes have the same count n."""
    m_neg, m_pos = _pools(mnist_labels, mnist_groups, randomize == "mnist", _rng(seed, split, "mnist"))
    c_neg, c_pos = _pools(cifar_labels, cifar_groups, randomize == "cifar", _rng(seed, split, "cifar"))
    n = min(len(m_neg), len(m_pos), len(c_neg), len(c_pos))
    if n == 0:
        raise ValueError(
            f"no MNIST-CIFAR {split} pairs: pool sizes MNIST {len(m_neg)}/{len(m_pos)}, "
            f"CIFAR {len(c_neg)}/{len(c_pos)} (negative/positive); one of the classes has no images"
        )
    m_idx = np.concatenate([m_neg[:n], m_pos[:n]])
    c_idx = np.concatenate([c_neg[:n], c_pos[:n]])
    y = np.repeat(np.array([0, 1], dtype=np.int64), n)
    order = _rng(seed, split, "shuffle").permutation(2 * n)
    return m_idx[order], c_idx[order], y[order]


def _take_balanced(y: np.ndarray, positions: np.ndarray, k: int, *, what: str, split: str) -> np.ndarray:
    """The first ``k`` of ``positions`` (already in random order) with the two labels as even as possible,
    returned in their original order."""
    if k > len(positions):
        raise ValueError(f"{what}={k} is more than the {len(positions)} MNIST-CIFAR {split} pairs available")
    is_pos = y[positions] == 1
    neg, pos = positions[~is_pos], positions[is_pos]
    n_neg = min(len(neg), max(k - len(pos), k - k // 2))
    return np.sort(np.concatenate([neg[:n_neg], pos[: k - n_neg]]))


def _compose(mnist: np.ndarray, cifar: np.ndarray, m_idx: np.ndarray, c_idx: np.ndarray) -> np.ndarray:
    """float32 (k, 3, 64, 32) in [0, 1] (ToTensor's x / 255): padded MNIST in all channels over CIFAR."""
    x = np.zeros((len(m_idx), *INPUT_SHAPE), dtype=np.float32)
    scale = np.float32(255)
    x[:, :, PAD : PAD + 28, PAD : PAD + 28] = (mnist[m_idx].astype(np.float32) / scale)[:, None]
    x[:, :, CIFAR_ROWS[0] : CIFAR_ROWS[1], :] = cifar[c_idx].astype(np.float32) / scale
    return x


# --- arguments and description ----------------------------------------------------------------------------


def _class_groups(classes: Any, arg: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Normalise a pair of classes (each an int or a group of ints in 0..9) to two sorted, disjoint tuples."""
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence) or len(classes) != 2:
        raise ValueError(f"{arg} must be a pair (negative class, positive class), got {classes!r}")
    groups = []
    for entry in classes:
        members = [entry] if isinstance(entry, int | np.integer) else entry
        if isinstance(members, str | bytes) or not isinstance(members, Sequence) or not members:
            raise ValueError(
                f"{arg}: each class must be an integer or a non-empty list of integers, got {entry!r}"
            )
        for c in members:
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or not 0 <= c <= 9:
                raise ValueError(f"{arg}: classes must be integers 0..9, got {c!r}")
        groups.append(tuple(sorted({int(c) for c in members})))
    if set(groups[0]) & set(groups[1]):
        raise ValueError(f"{arg}: the two classes overlap ({classes!r})")
    return groups[0], groups[1]


def _jsonable(groups: tuple[tuple[int, ...], tuple[int, ...]]) -> list[Any]:
    return [g[0] if len(g) == 1 else list(g) for g in groups]


def _name(
    mnist_groups: tuple[tuple[int, ...], ...],
    cifar_groups: tuple[tuple[int, ...], ...],
    randomize: str | None,
) -> str:
    """``MNIST-CIFAR`` for the paper's main dataset (the API preset name), ``MNIST-CIFAR:B`` / ``:C`` for
    its variants, otherwise the classes spelled out; randomized builds say so."""
    pairs = (_jsonable(mnist_groups), _jsonable(cifar_groups))
    variant = next((v for v, (m, c) in VARIANTS.items() if pairs == (list(m), list(c))), None)
    if variant == "A":
        name = "MNIST-CIFAR"
    elif variant:
        name = f"MNIST-CIFAR:{variant}"
    else:
        digits = "/".join("+".join(map(str, g)) for g in mnist_groups)
        objects = "/".join("+".join(CIFAR10_CLASSES[c] for c in g) for g in cifar_groups)
        name = f"MNIST-CIFAR ({digits}, {objects})"
    return f"{name} [{randomize.upper()}-randomized]" if randomize else name


def _block(name: str, rows: tuple[int, int], classes: list[Any]) -> FeatureBlock:
    return FeatureBlock(
        name=name,
        kind="image_region",
        indices=image_region_indices(INPUT_SHAPE, rows=rows),
        bayes_accuracy=None,
        params={"rows": list(rows), "classes": classes},
    )
