"""The declared network of an upload or a training request, built on torch's ``meta`` device: shapes only,
no weights in memory, so a checkpoint's names and shapes (checkpoints.py) and a network's cost
(architecture_cost.py) are checked before anything large is allocated. One builder for both, so both refuse
an architecture the engine cannot build with the same 422 on ``body.architecture``."""

from __future__ import annotations

from typing import Any

from sbengine.uploads.formats import Rejected
from sbengine.uploads.messages import one_line


def meta_skeleton(request: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, ...], int, Any]:
    """``(resolved architecture, input shape, number of classes, the network on the meta device)`` of
    ``request["architecture"]``, ``request["input_shape"]`` and ``request["num_classes"]``."""
    import torch

    from sbengine.models import build_model, resolve_architecture

    shape = tuple(int(n) for n in request["input_shape"])
    num_classes = int(request["num_classes"])
    try:
        architecture = resolve_architecture(request["architecture"])
        with torch.device("meta"):
            network = build_model(architecture, input_shape=shape, num_classes=num_classes)
    except ValueError as exc:
        raise Rejected(str(exc), field="body.architecture") from None
    except Exception as exc:  # a library builder choking on an option it accepted by name
        raise Rejected(
            f"cannot build {request['architecture']}: {one_line(exc)}", field="body.architecture"
        ) from None
    return architecture, shape, num_classes, network
