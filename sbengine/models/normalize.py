"""Input normalization in front of a network, for models trained on normalized inputs.

A checkpoint trained on ``(x - mean) / std`` images must see its inputs normalized the same way, while the
audit (randomization, PGD, UAPs) works on the dataset's own inputs. ``Normalized`` puts that step inside
the module, so every check sees one function of the raw inputs. Mean and std are non-persistent buffers:
the wrapped network's ``state_dict`` keys are unchanged (under ``network.``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def normalization_shape(input_shape: Sequence[int], length: int) -> tuple[int, ...]:
    """Broadcast shape of a mean/std of ``length`` values: one value for everything, or one per entry of the
    first input dimension (per channel of a (C, H, W) image, per feature of a vector)."""
    if length == 1:
        return (1,) * len(input_shape)
    if length != input_shape[0]:
        raise ValueError(
            f"normalization needs 1 or {input_shape[0]} values (one per channel/feature), got {length}"
        )
    return (length,) + (1,) * (len(input_shape) - 1)


class Normalized(nn.Module):
    """``network((x - mean) / std)`` with mean/std broadcast over the first input dimension."""

    def __init__(
        self, network: nn.Module, *, mean: Sequence[float], std: Sequence[float], input_shape: Sequence[int]
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"normalization mean and std differ in length ({len(mean)} vs {len(std)})")
        if any(not s > 0 for s in std):
            raise ValueError("normalization std values must be positive")
        shape = normalization_shape(input_shape, len(mean))
        self.network = network
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).reshape(shape), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(list(std), dtype=torch.float32).reshape(shape), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)
