"""The architecture table and ``build_model``: one place that says which models exist, which options each
takes, and which values are allowed.

Architectures are chosen by JSON-like configs (``{"name": "fcn", "width": 100}``) that arrive from users
through the service, so every option is checked against this table before anything is built and a bad
config fails with a one-line ``ValueError`` that names the offending key.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from sbengine.models.fcn import ACTIVATIONS, FCN
from sbengine.models.library import LIBRARIES, build_library, resolve_library
from sbengine.models.sequence import CNN1d, RecurrentClassifier


@dataclass(frozen=True)
class Option:
    """One keyword option of an architecture: its type (int, float, bool or str), default and allowed
    values. Numeric bounds are inclusive unless marked open; ``None`` means unbounded."""

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    odd: bool = False
    choices: tuple[str, ...] = ()

    def accepts(self, value: Any) -> bool:
        if self.type is bool:
            return isinstance(value, bool)
        if self.type is str:
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(
            value, numbers.Integral if self.type is int else numbers.Real
        ):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return not (self.odd and value % 2 == 0)

    def describe(self) -> str:
        """The allowed values in words, e.g. "an integer in [1, 65536]"."""
        if self.type is bool:
            return "a boolean"
        if self.type is str:
            return "one of " + ", ".join(self.choices)
        noun = "an odd integer" if self.odd else "an integer" if self.type is int else "a number"
        if self.high is None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"{noun} in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )


@dataclass(frozen=True)
class Architecture:
    """A buildable model family.

    ``input`` is "vector" (flat features) or "image" (3 x H x W, H and W multiples of 32). ``input_ndim``
    is the number of input dimensions the model insists on, or ``None`` when it flattens whatever it gets
    (the FCN, so it can also train on MNIST-CIFAR images).
    """

    name: str
    input: str
    input_ndim: int | None
    summary: str
    options: Mapping[str, Option]
    build: Callable[..., nn.Module] = field(repr=False, compare=False)

    def defaults(self) -> dict[str, Any]:
        return {key: option.default for key, option in self.options.items()}


_FCN_OPTIONS = {
    "width": Option(int, 100, 1, 65536),
    "depth": Option(int, 2, 1, 64),
    "activation": Option(str, "relu", choices=tuple(ACTIVATIONS)),
    "dropout": Option(float, 0.0, 0.0, 1.0, high_open=True),
    "input_dropout": Option(float, 0.0, 0.0, 1.0, high_open=True),
    "batch_norm": Option(bool, False),
    "init": Option(str, "default", choices=("default", "kaiming", "xavier")),
    "init_scale": Option(float, 1.0, 0.0, low_open=True),
}
_CNN1D_OPTIONS = {
    "filters": Option(int, 32, 1, 4096),
    "kernel": Option(int, 7, 1, 1025, odd=True),
    "layers": Option(int, 1, 1, 64),
    "pool": Option(bool, False),
}
_RNN_OPTIONS = {
    "hidden": Option(int, 100, 1, 8192),
    "step_features": Option(int, 10, 1, 65536),
    "layers": Option(int, 1, 1, 16),
    "many_to_many": Option(bool, False),
}


def _fcn(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    return FCN(in_features=math.prod(input_shape), num_classes=num_classes, **options)


def _cnn1d(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    return CNN1d(in_features=input_shape[0], num_classes=num_classes, **options)


def _recurrent(cell: str) -> Callable[..., nn.Module]:
    def build(input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
        return RecurrentClassifier(cell=cell, in_features=input_shape[0], num_classes=num_classes, **options)

    return build


# Names only: sbengine.models.vision (and torchvision, seconds to import) loads on the first vision build.
VISION_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "densenet121",
    "googlenet",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
)


def _vision(name: str) -> Callable[..., nn.Module]:
    def build(input_shape, num_classes):
        from sbengine.models.vision import VISION_MODELS

        return VISION_MODELS[name](num_classes)

    return build


ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in [
        Architecture(
            name="fcn",
            input="vector",
            input_ndim=None,
            summary="(width, depth)-FCN, docs/method.md §4.1",
            options=_FCN_OPTIONS,
            build=_fcn,
        ),
        Architecture(
            name="cnn1d",
            input="vector",
            input_ndim=1,
            summary="(filters, kernel, layers)-CNN over the feature vector, docs/method.md §4.2",
            options=_CNN1D_OPTIONS,
            build=_cnn1d,
        ),
        Architecture(
            name="gru",
            input="vector",
            input_ndim=1,
            summary="(hidden, step_features, layers)-GRU, docs/method.md §4.2",
            options=_RNN_OPTIONS,
            build=_recurrent("gru"),
        ),
        Architecture(
            name="lstm",
            input="vector",
            input_ndim=1,
            summary="(hidden, step_features, layers)-LSTM, docs/method.md §4.2",
            options=_RNN_OPTIONS,
            build=_recurrent("lstm"),
        ),
        *(
            Architecture(
                name=name,
                input="image",
                input_ndim=3,
                summary=f"CIFAR-style {name}, docs/method.md §4.3",
                options={},
                build=_vision(name),
            )
            for name in VISION_NAMES
        ),
    ]
}


def _architecture(name: Any) -> Architecture:
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_kwargs(name: str) -> dict[str, Any]:
    """The options of architecture ``name`` with their defaults."""
    return _architecture(name).defaults()


def resolve_architecture(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Check an architecture config and return it complete: ``name`` plus every option, defaults filled in.

    Storing the resolved config with a result records exactly what was built, even if defaults change.
    """
    if not isinstance(architecture, Mapping) or not isinstance(architecture.get("name"), str):
        raise ValueError(f"architecture must be a mapping with a string 'name', got {architecture!r}")
    if architecture["name"] in LIBRARIES:
        return resolve_library(architecture)
    arch = _architecture(architecture["name"])
    options = arch.defaults()
    for key, value in architecture.items():
        if key == "name":
            continue
        if key not in arch.options:
            allowed = ", ".join(arch.options) or "none"
            raise ValueError(f"{arch.name}: unknown option {key!r} (allowed: {allowed})")
        option = arch.options[key]
        if not option.accepts(value):
            raise ValueError(f"{arch.name}: {key} must be {option.describe()}, got {value!r}")
        options[key] = option.type(value)
    return {"name": arch.name, **options}


def _check_shape(name: str, input_shape: Any) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or not all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape
    ):
        raise ValueError(
            f"{name}: input_shape must be a non-empty tuple of positive integers, got {input_shape!r}"
        )
    return tuple(int(n) for n in shape)


def _check_input_shape(arch: Architecture, input_shape: Any) -> tuple[int, ...]:
    shape = _check_shape(arch.name, input_shape)
    if arch.input == "image":
        if len(shape) != 3 or shape[0] != 3 or any(n % 32 for n in shape[1:]):
            raise ValueError(
                f"{arch.name}: input_shape must be (3, H, W) with H and W positive multiples of 32, "
                f"got {shape}"
            )
    elif arch.input_ndim is not None and len(shape) != arch.input_ndim:
        raise ValueError(f"{arch.name}: input_shape must be 1-D (number of features,), got {shape}")
    return shape


def build_model(
    architecture: Mapping[str, Any], *, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build the model ``architecture`` describes, for inputs of ``input_shape`` and ``num_classes`` logits.

    Parameters are drawn from torch's global RNG: seed it (``torch.manual_seed``) first for a reproducible
    initialisation. Raises ``ValueError`` naming the offending key for any config or shape it cannot build.
    """
    config = resolve_architecture(architecture)
    if config["name"] in LIBRARIES:
        _check_classes(config["name"], num_classes)
        shape = _check_shape(config["name"], input_shape)
        return build_library(config, shape, int(num_classes))
    arch = ARCHITECTURES[config.pop("name")]
    shape = _check_input_shape(arch, input_shape)
    _check_classes(arch.name, num_classes)
    return arch.build(shape, int(num_classes), **config)


def _check_classes(name: str, num_classes: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
