"""The validator program's ``architecture`` request (sbengine/uploads/architecture_cost.py): what a
torchvision or timm network costs, measured on the meta device before anything is trained, must count the
same parameters as the real module and at least its multiply-adds and activations (the budget's upper
estimate); what cannot be built or cannot read the inputs is refused on body.architecture."""

from __future__ import annotations

import pytest
import torch

from sbengine.models import build_model
from sbengine.models.cost import measure_cost
from sbengine.uploads.architecture_cost import measure_architecture
from sbengine.uploads.check import handle
from sbengine.uploads.formats import Rejected


def _request(architecture: dict, shape: list[int], classes: int) -> dict:
    return {
        "kind": "architecture",
        "architecture": architecture,
        "input_shape": shape,
        "num_classes": classes,
    }


@pytest.mark.parametrize(
    ("architecture", "shape", "classes"),
    [
        ({"name": "torchvision", "model": "resnet18"}, [3, 40, 40], 7),
        ({"name": "timm", "model": "test_resnet"}, [3, 40, 40], 3),
        ({"name": "timm", "model": "resnet18"}, [1, 24, 36], 2),
        ({"name": "timm", "model": "vit_tiny_patch16_224", "img_size": 48}, [3, 48, 48], 5),
    ],
)
def test_meta_figures_bound_the_real_module(architecture, shape, classes):
    measured = measure_architecture(_request(architecture, shape, classes))
    torch.manual_seed(0)
    real = build_model(architecture, input_shape=tuple(shape), num_classes=classes).eval()
    cost = measure_cost(real, tuple(shape), module=real)
    got = measured["cost"]
    assert (got["parameters"], got["buffers"]) == (cost["parameters"], cost["buffers"])
    assert cost["macs"] <= got["macs"] <= 1.5 * cost["macs"]
    assert cost["activations"] <= got["activations"] <= 2 * cost["activations"]
    assert measured["architecture"]["model"] == architecture["model"]


def test_a_network_larger_than_memory_is_measured_without_allocating_it():
    """A billion parameters on the meta device: the budget, not the validator's memory, refuses it."""
    measured = measure_architecture(
        _request({"name": "timm", "model": "vit_giant_patch14_224"}, [3, 224, 224], 10)
    )
    assert measured["cost"]["parameters"] > 1_000_000_000


@pytest.mark.parametrize(
    ("architecture", "shape", "says"),
    [
        ({"name": "timm", "model": "no_such_net"}, [3, 32, 32], "unknown model"),
        ({"name": "torchvision", "model": "resnet18", "pretrained": True}, [3, 32, 32], "not allowed"),
        ({"name": "torchvision", "model": "resnet18", "no_such_option": 3}, [3, 32, 32], "cannot build"),
        ({"name": "torchvision", "model": "resnet18"}, [1, 32, 32], "3-channel"),
        ({"name": "timm", "model": "vit_tiny_patch16_224"}, [3, 40, 40], "cannot read inputs of shape"),
    ],
)
def test_what_cannot_be_built_or_run_is_refused_on_the_architecture(architecture, shape, says):
    with pytest.raises(Rejected) as refused:
        measure_architecture(_request(architecture, shape, 2))
    assert refused.value.field == "body.architecture" and says in refused.value.detail
    answer = handle(_request(architecture, shape, 2))
    assert answer["ok"] is False and answer["field"] == "body.architecture" and answer["status"] == 422
