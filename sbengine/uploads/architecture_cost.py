"""The ``architecture`` request of the upload validator program: what one network of an architecture the
service has no formula for (a torchvision or timm model by name) costs, before anything is trained.

``POST /v1/models`` budgets a training job at submission and the API never imports torch, so it asks this
program, in the same sandbox as uploads, for the figures of ``sbengine.models.cost.measure_cost`` at the
dataset's input shape and number of classes. The network is built and run on torch's ``meta`` device:
shapes only, no weights in memory and no arithmetic, so measuring a network far larger than the server would
train takes a second or two and lets the budget refuse it by name instead of the validator running out of
memory. Meta kernels decompose some fused operators (attention) into the matrix products they stand for,
so the figures are at or above those of the same forward pass on the CPU (tests/sbengine compares): an
upper estimate, as the budget wants.
"""

from __future__ import annotations

from typing import Any

from sbengine.uploads.formats import Rejected
from sbengine.uploads.messages import one_line
from sbengine.uploads.skeleton import meta_skeleton


def measure_architecture(request: dict[str, Any]) -> dict[str, Any]:
    """``{"architecture": <resolved config>, "cost": {...}}`` of ``request["architecture"]`` for inputs of
    ``request["input_shape"]`` and ``request["num_classes"]`` logits; a config the engine cannot build, or a
    network that cannot read such inputs, is :class:`Rejected` on ``body.architecture``."""
    import torch

    torch.set_num_threads(1)
    from sbengine.models.cost import measure_cost

    architecture, shape, num_classes, network = meta_skeleton(request)
    network.eval()
    try:
        with torch.device("meta"):
            cost = measure_cost(network, shape, module=network)
            logits = network(torch.zeros((1, *shape)))
    except Exception as exc:
        raise Rejected(
            f"{architecture['name']} {architecture.get('model', '')} cannot read inputs of shape {shape}: "
            f"{one_line(exc)}",
            field="body.architecture",
        ) from None
    if tuple(logits.shape) != (1, num_classes):
        raise Rejected(
            f"the network answers one input with shape {tuple(logits.shape)}, not (1, {num_classes})",
            field="body.architecture",
        )
    return {"architecture": architecture, "cost": cost}
