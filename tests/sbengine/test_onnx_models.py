"""Models from elsewhere in the engine: torchvision/timm by name, ONNX graphs interpreted with torch ops
(checked against the exporting module and onnxruntime), the forward-only onnxruntime module, and costs."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sbengine.models import build_model
from sbengine.models.cost import measure_cost
from sbengine.models.library import resolve_library
from sbengine.models.loading import is_differentiable

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class SmallCNN(nn.Module):
    """Padding, strides, ceil-mode and average pooling, batch norm, leaky ReLU, flatten, linear, softmax:
    the attribute conventions the interpreter must get right."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, (3, 1), padding=(1, 0), groups=2)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.avg = nn.AvgPool2d(2, padding=1, count_include_pad=False)
        self.head = nn.Linear(6 * 3 * 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.leaky_relu(self.bn(self.conv(x)), 0.1)
        x = self.avg(self.pool(torch.sigmoid(self.conv2(x))))
        return self.head(torch.flatten(x, 1)) - 0.5


def _export(module: nn.Module, shape: tuple[int, ...], *, dynamo: bool, batch: int | None = None):
    x = torch.zeros((batch or 2, *shape))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            dims = None if batch else ({0: torch.export.Dim("batch")},)
            torch.onnx.export(module, (x,), dynamo=True, dynamic_shapes=dims).save(
                buffer, external_data=False
            )
        else:
            axes = None if batch else {"x": {0: "batch"}}
            torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["x"], dynamic_axes=axes)
    data = buffer.getvalue()
    return data, onnx.load_model_from_string(data)


@pytest.mark.parametrize("dynamo", [False, True])
def test_the_interpreter_matches_the_exported_module_and_onnxruntime_with_gradients(dynamo):
    from sbengine.models.onnx_graph import OnnxRuntimeModule, OnnxTorch

    torch.manual_seed(0)
    module = SmallCNN().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5)
        module.bn.running_var.uniform_(0.5, 2.0)
    data, graph = _export(module, (3, 21, 19), dynamo=dynamo)
    output = graph.graph.output[0].name
    interpreted = OnnxTorch(graph, output=output, batch=None, probabilities=False)
    runtime = OnnxRuntimeModule(data, output=output, batch=None, probabilities=False)
    x = torch.randn(5, 3, 21, 19, requires_grad=True)
    expected = module(x)
    got = interpreted(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(runtime(x.detach()), expected.detach(), rtol=1e-4, atol=1e-4)
    (grad,) = torch.autograd.grad(got.sum(), x)
    (reference,) = torch.autograd.grad(module(x).sum(), x)
    torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-5)
    assert is_differentiable(interpreted) and not is_differentiable(runtime)


def test_a_fixed_batch_graph_runs_any_batch_and_probabilities_become_log_probabilities():
    from sbengine.models.onnx_graph import OnnxTorch, output_kind

    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    _, graph = _export(module, (6,), dynamo=False, batch=4)
    output = graph.graph.output[0].name
    assert output_kind(graph, output), "a Softmax output holds probabilities"
    interpreted = OnnxTorch(graph, output=output, batch=4, probabilities=True)
    x = torch.randn(7, 6)  # two chunks of 4, the last one padded
    torch.testing.assert_close(interpreted(x), torch.log(module(x)), rtol=1e-5, atol=1e-5)


def test_gradient_checks_refuse_a_forward_only_model_before_running():
    from sbengine.audit import run_audit
    from sbengine.data import build_dataset
    from sbengine.models.onnx_graph import OnnxRuntimeModule

    torch.manual_seed(0)
    module = build_model({"name": "fcn", "width": 8, "depth": 1}, input_shape=(50,), num_classes=2).eval()
    data, graph = _export(module, (50,), dynamo=False)
    runtime = OnnxRuntimeModule(data, output=graph.graph.output[0].name, batch=None, probabilities=False)
    dataset = build_dataset({"preset": "LMS-5", "n_train": 20, "n_val": 20, "n_test": 200, "seed": 0})
    with pytest.raises(ValueError, match="pgd check needs gradients"):
        run_audit(runtime, dataset, checks=["randomization", "pgd"], repeats=1)
    forward_only = run_audit(runtime, dataset, checks=["randomization"], repeats=1, seed=2)
    native = run_audit(module, dataset, checks=["randomization"], repeats=1, seed=2)
    assert (
        abs(forward_only["results"]["randomization"]["auc"] - native["results"]["randomization"]["auc"])
        < 1e-6
    )


def test_library_models_take_any_image_size_and_never_fetch_weights():
    network = build_model(
        {"name": "torchvision", "model": "resnet18"}, input_shape=(3, 40, 56), num_classes=7
    )
    assert network(torch.zeros(2, 3, 40, 56)).shape == (2, 7)
    timm_net = build_model({"name": "timm", "model": "test_resnet"}, input_shape=(1, 33, 33), num_classes=4)
    assert timm_net(torch.zeros(2, 1, 33, 33)).shape == (2, 4), "in_chans from the input shape"
    for bad, message in [
        ({"model": "resnet18", "weights": "DEFAULT"}, "'weights' is not allowed"),
        ({"model": "resnet18", "pretrained": True}, "'pretrained' is not allowed"),
        ({"model": "no_such_net"}, "unknown model 'no_such_net'"),
        ({"model": "resnet18", "zero_init_residual": [1]}, "must be a number, string, boolean or null"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_library({"name": "torchvision", **bad})
    with pytest.raises(ValueError, match="unexpected keyword argument 'nonsense'"):
        build_model({"name": "torchvision", "model": "resnet18", "nonsense": 1}, input_shape=(3, 32, 32),
                    num_classes=2)  # fmt: skip


def test_measured_costs_agree_with_the_service_formulas():
    """The validator's measurement (stored for models the service has no formula for) and the service's
    own formulas count the same things on the architectures both know."""
    from service.model_cost import network_cost

    for architecture, shape in [
        ({"name": "fcn", "width": 30, "depth": 2}, (50,)),
        ({"name": "resnet18"}, (3, 32, 32)),
    ]:
        module = build_model(architecture, input_shape=shape, num_classes=2).eval()
        measured = measure_cost(module, shape, module=module)
        formula = network_cost(architecture, list(shape), 2)
        assert measured["macs"] == formula.macs, architecture
        assert measured["parameters"] == formula.parameters and measured["buffers"] == formula.buffers
    assert np.isfinite(measured["activations"])


def test_weights_stored_as_constant_nodes_are_held_like_initializers():
    """What torch 2.14's exporter writes at opset 17/20 for some modules (and what onnx2torch fails on)."""
    from onnx import helper

    from sbengine.models.onnx_graph import OnnxTorch

    torch.manual_seed(2)
    module = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2)).eval()
    _, graph = _export(module, (5,), dynamo=False)
    constants = [
        helper.make_node("Constant", [], [init.name], value=init) for init in graph.graph.initializer
    ]
    graph.graph.ClearField("initializer")
    nodes = list(graph.graph.node)
    graph.graph.ClearField("node")
    graph.graph.node.extend(constants + nodes)
    interpreted = OnnxTorch(graph, output=graph.graph.output[0].name, batch=None, probabilities=False)
    x = torch.randn(3, 5)
    torch.testing.assert_close(interpreted(x), module(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in interpreted.parameters()) == sum(p.numel() for p in module.parameters())
    assert [op for op, *_ in interpreted.nodes].count("Constant") == 0
