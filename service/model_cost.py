"""What one network of the engine's architecture table costs, computed without torch: parameters, forward
multiply-adds and activation values per example.

The job budget (service/budget.py) needs these before a job is queued, and the API never imports the
engine, so the formulas mirror sbengine/models/fcn.py and sequence.py layer by layer, and the vision zoo
(sbengine/models/vision.py, torchvision's networks with CIFAR stems) is a measured table.
tests/security/test_budget_model_costs.py builds the real modules and compares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from service.schemas.models import CNN1dArchitecture, FCNArchitecture, RecurrentArchitecture


@dataclass(frozen=True)
class NetworkCost:
    """``parameters``: trainable values (what the optimizer keeps state for); ``buffers``: other stored
    values (batch-norm statistics); ``macs``: multiply-adds of one example's forward pass; ``activations``:
    values one example's forward pass produces, which training keeps for the backward pass."""

    parameters: int
    buffers: int
    macs: int
    activations: int


@dataclass(frozen=True)
class VisionCost:
    """One vision network measured at a 3x32x32 input with its last linear layer left out (that one depends
    on the number of classes). Convolutions' multiply-adds and the activations grow with the image's area
    (every model ends in adaptive pooling); fully connected layers before the last one do not."""

    parameters: int
    buffers: int
    head_in: int
    conv_macs: int
    linear_macs: int
    activations: int


# Measured with forward hooks (Conv2d: output values x in-channels per group x kernel area; Linear: in x
# out; activations: the output values of every leaf module) on the modules sbengine.models.build_model makes.
VISION: dict[str, VisionCost] = {
    "resnet18": VisionCost(11168832, 9620, 512, 140181504, 0, 610818),
    "resnet34": VisionCost(21276992, 17060, 512, 291176448, 0, 918018),
    "resnet50": VisionCost(23500352, 53173, 2048, 325779456, 0, 2617346),
    "mobilenet_v2": VisionCost(2223872, 34164, 1280, 87963648, 0, 4783362),
    "densenet121": VisionCost(6946176, 83769, 1024, 223412224, 0, 3147778),
    "googlenet": VisionCost(5480736, 14359, 1024, 1337131008, 0, 6807554),
    "vgg11_bn": VisionCost(128771840, 5512, 4096, 152764416, 119537664, 535554),
    "vgg13_bn": VisionCost(128956736, 5898, 4096, 228261888, 119537664, 830466),
    "vgg16_bn": VisionCost(134268992, 8461, 4096, 313196544, 119537664, 910338),
    "vgg19_bn": VisionCost(139581248, 11024, 4096, 398131200, 119537664, 990210),
}


def _options(architecture: dict[str, Any], schema: type[BaseModel]) -> dict[str, Any]:
    """The architecture's options with the schema's defaults for those it leaves out (stored rows are
    complete; an uploaded architecture may not be)."""
    defaults = {name: field.default for name, field in schema.model_fields.items() if name != "name"}
    return {**defaults, **{k: v for k, v in architecture.items() if k in defaults}}


def _fcn(o: dict[str, Any], d: int, classes: int) -> NetworkCost:
    width, depth = int(o["width"]), int(o["depth"])
    linear = d * width + width + (depth - 1) * (width * width + width) + width * classes + classes
    prelu = depth if o["activation"] == "prelu" else 0
    batch_norm = 2 * width * depth if o["batch_norm"] else 0
    buffers = (2 * width + 1) * depth if o["batch_norm"] else 0
    # Per hidden layer: the linear output and the activation's, plus dropout's and batch norm's when present.
    per_layer = width * (2 + (o["dropout"] > 0) + bool(o["batch_norm"]))
    activations = d * (1 + (o["input_dropout"] > 0)) + depth * per_layer + classes
    macs = d * width + (depth - 1) * width * width + width * classes
    return NetworkCost(linear + prelu + batch_norm, buffers, macs, activations)


def _cnn1d(o: dict[str, Any], d: int, classes: int) -> NetworkCost:
    filters, kernel, layers = int(o["filters"]), int(o["kernel"]), int(o["layers"])
    length = d // (kernel // 2) if o["pool"] else d
    convs = kernel * filters + filters + (layers - 1) * (filters * filters * kernel + filters)
    head = filters * length * d + d + d * classes + classes
    macs = (
        d * kernel * filters
        + (layers - 1) * d * filters * filters * kernel
        + filters * length * d
        + d * classes
    )
    activations = d + 2 * filters * d * layers + (filters * length if o["pool"] else 0) + 2 * d + classes
    return NetworkCost(convs + head, 0, macs, activations)


def _recurrent(o: dict[str, Any], d: int, classes: int, cell: str) -> NetworkCost:
    gates = {"gru": 3, "lstm": 4}[cell]
    hidden, step, layers = int(o["hidden"]), int(o["step_features"]), int(o["layers"])
    steps = max(1, d // step)
    rnn = macs = 0
    for layer in range(layers):
        inputs = step if layer == 0 else hidden
        rnn += gates * hidden * (inputs + hidden) + 2 * gates * hidden
        macs += steps * gates * hidden * (inputs + hidden)
    head_in = hidden * (steps if o["many_to_many"] else 1)
    # Per step and layer the cell keeps its gates, its state and its output for the backward pass.
    activations = d + steps * hidden * layers * (gates + 2) + classes
    return NetworkCost(rnn + head_in * classes + classes, 0, macs + head_in * classes, activations)


def _vision(cost: VisionCost, input_shape: list[int], classes: int) -> NetworkCost:
    area = math.prod(input_shape[1:]) / (32 * 32) if len(input_shape) == 3 else 1.0
    head = cost.head_in * classes
    return NetworkCost(
        parameters=cost.parameters + head + classes,
        buffers=cost.buffers,
        macs=math.ceil(cost.conv_macs * area) + cost.linear_macs + head,
        activations=math.ceil(cost.activations * area),
    )


def network_cost(architecture: dict[str, Any], input_shape: list[int], num_classes: int) -> NetworkCost:
    """The cost of one network ``architecture`` (a stored or requested architecture dict) for inputs of
    ``input_shape`` and ``num_classes`` outputs."""
    name = architecture.get("name")
    d = max(1, math.prod(int(n) for n in input_shape))
    classes = max(1, int(num_classes))
    if name == "fcn":
        return _fcn(_options(architecture, FCNArchitecture), d, classes)
    if name == "cnn1d":
        return _cnn1d(_options(architecture, CNN1dArchitecture), d, classes)
    if name in ("gru", "lstm"):
        return _recurrent(_options(architecture, RecurrentArchitecture), d, classes, name)
    if name in VISION:
        return _vision(VISION[name], list(input_shape), classes)
    raise ValueError(f"no cost model for architecture {name!r}")
