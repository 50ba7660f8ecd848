"""Architectures by name from the libraries people train with: ``{"name": "torchvision", "model":
"resnet18"}`` (``torchvision.models.get_model``) and ``{"name": "timm", "model": "resnet18"}``
(``timm.create_model``), for any image size and number of classes.

The weights always come from the user's upload: this module never asks a library for pretrained weights
(``weights=None`` / ``pretrained=False``, and the options that would fetch or point at files are refused),
so building a model never touches the network. The remaining keyword options are passed to the library's
builder as they are: only JSON scalars, checked here for their form and by the builder itself (an unknown
keyword is the builder's ``TypeError``, reported as a one-line ``ValueError``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from torch import nn

LIBRARIES = ("torchvision", "timm")
# Options that would fetch weights, read files, or contradict what the upload declares (num_classes comes
# from the declaration; in_chans from input_shape).
REFUSED_OPTIONS = frozenset(
    {
        "weights",
        "weights_backbone",
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "checkpoint_path",
        "cache_dir",
        "progress",
        "num_classes",
        "in_chans",
        "features_only",
        "scriptable",
        "exportable",
        "no_jit",
    }
)
MAX_OPTIONS = 32
_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


@functools.cache
def torchvision_models() -> tuple[str, ...]:
    """The image classifiers of the installed torchvision (not its detection/segmentation/video models)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _known(library: str, model: str) -> bool:
    if library == "torchvision":
        return model in torchvision_models()
    import timm

    return bool(timm.is_model(model))


def resolve_library(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Check a library architecture config; returns it with ``model`` first. Raises ``ValueError``."""
    library = architecture["name"]
    model = architecture.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError(f"{library}: 'model' must be a model name (e.g. \"resnet18\")")
    options = {k: v for k, v in architecture.items() if k not in ("name", "model")}
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"{library}: at most {MAX_OPTIONS} options")
    for key, value in options.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"{library}: option names are lower-case identifiers, got {key!r}")
        if key in REFUSED_OPTIONS:
            raise ValueError(
                f"{library}: option {key!r} is not allowed (weights come from the upload, classes and "
                "channels from the declared input_shape and num_classes)"
            )
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise ValueError(f"{library}: option {key!r} must be a number, string, boolean or null")
    if not _known(library, model):
        hint = "torchvision.models.list_models()" if library == "torchvision" else "timm.list_models()"
        raise ValueError(f"{library}: unknown model {model!r} (see {hint})")
    return {"name": library, "model": model, **options}


def build_library(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The named network with freshly initialised weights (from torch's global RNG), never downloaded."""
    library, model = config["name"], config["model"]
    options = {k: v for k, v in config.items() if k not in ("name", "model")}
    if len(input_shape) != 3:
        raise ValueError(f"{library}: input_shape must be (C, H, W), got {input_shape}")
    try:
        if library == "torchvision":
            if input_shape[0] != 3:
                raise ValueError(f"torchvision: {model} takes 3-channel images, not {input_shape[0]}")
            import torchvision

            return torchvision.models.get_model(model, weights=None, num_classes=num_classes, **options)
        import timm

        return timm.create_model(
            model, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **options
        )
    except (TypeError, AssertionError, KeyError, RuntimeError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"{library}: cannot build {model} with {options or 'no options'}: {message}"
        ) from None
