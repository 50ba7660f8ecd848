"""What one forward pass of any model costs, measured on the model itself: multiply-adds, values produced,
parameters and buffers.

The service budgets jobs without importing torch (service/model_cost.py has formulas for the engine's own
architectures); for a network it has no formula for (a torchvision or timm model by name, an ONNX graph)
the upload validator measures it here once and the model row keeps the figures. Multiply-adds come from
torch's own ``FlopCounterMode`` (matrix products and convolutions: half its FLOPs), the values produced from
every operator's outputs (views excepted); one example, batch of one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode


class _Outputs(TorchDispatchMode):
    """Counts the values every non-view operator produces (an upper bound of what a backward pass keeps)."""

    def __init__(self) -> None:
        super().__init__()
        self.values = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for tensor in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(tensor, torch.Tensor):
                    self.values += tensor.numel()
        return out


def measure_cost(
    forward: Callable[[torch.Tensor], Any],
    input_shape: tuple[int, ...],
    *,
    module: torch.nn.Module | None,
    batch: int = 1,
) -> dict[str, int]:
    """``{"parameters", "buffers", "macs", "activations"}`` per example of ``forward`` on a zero input of
    ``batch`` rows of ``input_shape`` (a graph with a fixed batch size runs that many). ``module``'s
    parameters and buffers are counted when given."""
    x = torch.zeros((batch, *input_shape))
    with torch.no_grad():
        with FlopCounterMode(display=False) as flops:
            forward(x)
        with _Outputs() as outputs:
            forward(x)
    parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
    buffers = sum(b.numel() for b in module.buffers()) if module is not None else 0
    return {
        "parameters": int(parameters),
        "buffers": int(buffers),
        "macs": int(math.ceil(flops.get_total_flops() / 2 / batch)),
        "activations": int(math.ceil(outputs.values / batch)),
    }
