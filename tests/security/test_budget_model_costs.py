"""service/model_cost.py mirrors the engine's networks without torch: its parameter counts must equal the
real modules' for every architecture, and its forward multiply-adds those measured by hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sbengine.models import build_model
from service.model_cost import VISION, network_cost

CONFIGS = [
    ({"name": "fcn", "width": 100, "depth": 2}, [50], 2),
    (
        {"name": "fcn", "width": 37, "depth": 5, "activation": "prelu", "batch_norm": True, "dropout": 0.1},
        [20],
        3,
    ),
    ({"name": "fcn", "width": 8, "depth": 1, "input_dropout": 0.2}, [3, 64, 32], 2),
    ({"name": "cnn1d"}, [50], 2),
    ({"name": "cnn1d", "filters": 5, "kernel": 3, "layers": 3, "pool": False}, [31], 4),
    ({"name": "cnn1d", "filters": 7, "kernel": 9, "layers": 2, "pool": True}, [40], 2),
    ({"name": "gru"}, [50], 2),
    ({"name": "gru", "hidden": 13, "step_features": 5, "layers": 3, "many_to_many": True}, [20], 3),
    ({"name": "lstm", "hidden": 16, "step_features": 2, "layers": 2}, [10], 2),
    ({"name": "lstm", "hidden": 4, "step_features": 10, "layers": 1, "many_to_many": True}, [50], 2),
]


def counted_macs(model: nn.Module, input_shape: list[int]) -> int:
    """Multiply-adds of one example's forward pass: every Linear, Conv and recurrent layer, by hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv1d | nn.Conv2d):
            out = output[0]
            total += (
                out.numel()
                * module.in_channels
                // module.groups
                * int(torch.tensor(module.kernel_size).prod())
            )
        elif isinstance(module, nn.RNNBase):
            steps, gates = inputs[0].shape[1], {"GRU": 3, "LSTM": 4}[module.mode]
            for layer in range(module.num_layers):
                fan_in = module.input_size if layer == 0 else module.hidden_size
                total += steps * gates * module.hidden_size * (fan_in + module.hidden_size)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize(("architecture", "input_shape", "classes"), CONFIGS)
def test_parameter_and_macs_counts_match_the_torch_modules(architecture, input_shape, classes):
    model = build_model(architecture, input_shape=tuple(input_shape), num_classes=classes)
    cost = network_cost(architecture, input_shape, classes)
    assert cost.parameters == sum(p.numel() for p in model.parameters())
    assert cost.buffers == sum(b.numel() for b in model.buffers())
    assert cost.macs == counted_macs(model, input_shape)


@pytest.mark.parametrize(
    ("name", "input_shape", "classes"),
    [("resnet18", [3, 64, 32], 10), ("mobilenet_v2", [3, 32, 64], 2), ("vgg11_bn", [3, 64, 32], 2)],
)
def test_the_vision_table_matches_the_torch_modules(name, input_shape, classes):
    model = build_model({"name": name}, input_shape=tuple(input_shape), num_classes=classes)
    cost = network_cost({"name": name}, input_shape, classes)
    assert cost.parameters == sum(p.numel() for p in model.parameters())
    assert cost.buffers == sum(b.numel() for b in model.buffers())
    assert cost.macs == counted_macs(model, input_shape)


def test_every_vision_network_has_a_row():
    from sbengine.models.registry import VISION_NAMES

    assert set(VISION) == set(VISION_NAMES)
