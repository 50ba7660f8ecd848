"""The fully connected network of the paper, a "(w, d)-FCN" (docs/method.md §4.1)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "tanh": nn.Tanh,
}

# (nonlinearity, negative slope) for Kaiming's gain; PReLU starts at slope 0.25.
_KAIMING_GAIN = {
    "relu": ("relu", 0.0),
    "leaky_relu": ("leaky_relu", 0.01),
    "prelu": ("leaky_relu", 0.25),
    "tanh": ("tanh", 0.0),
}


class FCN(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear read-out.

    Each hidden layer is Linear -> activation -> optional Dropout -> optional BatchNorm1d, the order of the
    original code. The input is flattened, so the same network trains on vectors and on images
    (MNIST-CIFAR).

    ``init`` is "default" (PyTorch's Linear init) or "kaiming"/"xavier" (normal variants). Only weight
    matrices are re-drawn and biases are zeroed: the original applied Kaiming to the 1-D biases and crashed
    (docs/method.md §12.6). ``init_scale`` then multiplies every weight matrix, which is how the paper's
    initialisation-scale sweeps are expressed.
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        width: int = 100,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        batch_norm: bool = False,
        init: str = "default",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        fan_in = in_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            fan_in = width
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)
        self._initialise(init, init_scale, activation)

    @torch.no_grad()
    def _initialise(self, init: str, scale: float, activation: str) -> None:
        for layer in self.layers:
            if not isinstance(layer, nn.Linear):
                continue
            if init == "kaiming":
                nonlinearity, slope = _KAIMING_GAIN[activation]
                nn.init.kaiming_normal_(layer.weight, a=slope, nonlinearity=nonlinearity)
                nn.init.zeros_(layer.bias)
            elif init == "xavier":
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
            if scale != 1.0:
                layer.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))
