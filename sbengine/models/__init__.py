"""Models the engine can train and audit: the paper's FCN, 1-D CNN, GRU/LSTM and the CIFAR-style zoo, plus
torchvision and timm networks by name and ONNX graphs (uploaded).

Build one from a JSON-like config with ``build_model``; ``ARCHITECTURES`` lists what exists and which
options each takes. ``load_network`` turns any stored model (weights or graph) into the module the checks
run.
"""

from sbengine.models.loading import is_differentiable, load_network
from sbengine.models.registry import (
    ARCHITECTURES,
    Architecture,
    Option,
    architecture_kwargs,
    build_model,
    resolve_architecture,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "Option",
    "architecture_kwargs",
    "build_model",
    "is_differentiable",
    "load_network",
    "resolve_architecture",
]
