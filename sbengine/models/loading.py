"""``load_network``: a stored model (architecture + weights file) as the module every check runs.

One path for every kind of model: an architecture of the registry or a library (torchvision, timm) is built
and its safetensors weights loaded; an ONNX graph becomes its interpreter or onnxruntime module. Either way
the result is a module from the dataset's inputs to logits, wrapped in ``Normalized`` when the model was
trained on normalized inputs; checks ask a model only for what it can do (``differentiable``), never where
it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

ONNX = "onnx"


def is_differentiable(module: nn.Module) -> bool:
    """False for a module that offers forward passes only (a graph run by onnxruntime)."""
    return all(getattr(m, "differentiable", True) for m in module.modules())


def load_network(
    architecture: Mapping[str, Any],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    weights: Path | str,
    normalization: Mapping[str, Any] | None = None,
) -> nn.Module:
    if architecture.get("name") == ONNX:
        from sbengine.models.onnx_graph import onnx_module

        module = onnx_module(weights, dict(architecture))
    else:
        from safetensors.torch import load_file

        from sbengine.models.registry import build_model

        module = build_model(architecture, input_shape=input_shape, num_classes=num_classes)
        module.load_state_dict(load_file(str(weights)))
    if normalization:
        from sbengine.models.normalize import Normalized

        module = Normalized(module, input_shape=input_shape, **normalization)
    return module
