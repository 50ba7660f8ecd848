"""Models the engine can train and audit: the paper's FCN, 1-D CNN, GRU/LSTM and the CIFAR-style zoo.

Build one from a JSON-like config with ``build_model``; ``ARCHITECTURES`` lists what exists and which
options each takes.
"""

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
    "resolve_architecture",
]
