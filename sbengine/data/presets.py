"""The paper's named datasets (docs/method.md §1.4) as block compositions, with the notebooks' sizes."""

from __future__ import annotations

from dataclasses import dataclass

from sbengine.data.synthetic import BlockSpec


@dataclass(frozen=True)
class Preset:
    blocks: tuple[BlockSpec, ...]
    n_train: int
    n_val: int
    n_test: int
    simple_blocks: tuple[int, ...] = (0,)
    description: str = ""


def _lin(noise: float = 0.0) -> BlockSpec:
    return (
        BlockSpec("noisy_linear", noise=noise, name="noisy linear")
        if noise
        else BlockSpec("linear", name="linear")
    )


def _slabs(k: int, count: int, margin: float = 0.1, name: str | None = None) -> BlockSpec:
    return BlockSpec(
        "slab",
        k=k,
        count=count,
        margin=margin,
        name=name or (f"{k}-slab" if count == 1 else f"{count}x {k}-slab"),
    )


SYNTHETIC_PRESETS: dict[str, Preset] = {
    "LMS-5": Preset(
        (_lin(), _slabs(5, 49)),
        100_000,
        10_000,
        10_000,
        description="1 linear + 49 5-slab coordinates, rotated; S = the linear coordinate",
    ),
    "LMS-7": Preset(
        (_lin(), _slabs(7, 49)),
        100_000,
        10_000,
        10_000,
        description="1 linear + 49 7-slab coordinates, rotated; S = the linear coordinate",
    ),
    "MS-(5,7)": Preset(
        (_slabs(5, 1), _slabs(7, 49)),
        100_000,
        10_000,
        10_000,
        description="1 5-slab + 49 7-slab coordinates, rotated; S = the 5-slab coordinate",
    ),
    "MS-5": Preset(
        (_slabs(5, 1, name="5-slab (coordinate 0)"), _slabs(5, 49)),
        100_000,
        10_000,
        10_000,
        description="50 5-slab coordinates; S = coordinate 0 (all features equally complex)",
    ),
    "MS-7": Preset(
        (_slabs(7, 1, name="7-slab (coordinate 0)"), _slabs(7, 49)),
        40_000,
        10_000,
        10_000,
        description="50 7-slab coordinates; S = coordinate 0 (control for noisy-LMS-7)",
    ),
    "noisy-LMS-5": Preset(
        (_lin(0.1), _slabs(5, 49)),
        40_000,
        10_000,
        10_000,
        description="noisy linear (p = 0.1, margin-band noise, Bayes 0.95) + 49 5-slabs",
    ),
    "noisy-LMS-7": Preset(
        (_lin(0.1), _slabs(7, 49)),
        40_000,
        10_000,
        10_000,
        description="noisy linear (p = 0.1, margin-band noise, Bayes 0.95) + 49 7-slabs",
    ),
    "AdvMS-(5,7)": Preset(
        (_slabs(5, 10, margin=0.05), _slabs(7, 10, margin=0.15)),
        6_000,
        2_000,
        2_000,
        description="10 5-slabs (γ 0.05) + 10 7-slabs (γ 0.15), d = 20 (App. E.2.1)",
    ),
}

IMAGE_PRESETS = {
    "MNIST-CIFAR": "A",
    "MNIST-CIFAR-A": "A",
    "MNIST-CIFAR-B": "B",
    "MNIST-CIFAR-C": "C",
}

PRESET_NAMES = tuple(SYNTHETIC_PRESETS) + tuple(IMAGE_PRESETS)
