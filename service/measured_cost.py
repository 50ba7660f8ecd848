"""The cost of a network the service has no formula for (a torchvision or timm model by name), measured by
the engine at submission, so ``POST /v1/models`` budgets training it like any other job.

The API never imports torch, and ``service/model_cost.py``'s formulas cover only the engine's own
architectures, so the service asks the upload validator program (request kind ``architecture``:
sbengine/uploads/architecture_cost.py) in the same sandbox, slots and limits as uploads: no second way to
start the engine, and a server whose validators are all busy answers 503 with a Retry-After as for uploads.
A measurement takes a second or a few (the program imports torch and the library); the figures depend only on
the architecture, the input shape and the number of classes, so each process keeps the latest
``CACHE_SIZE`` of them and a resubmission, or another owner's request for the same network, answers at once.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from service.model_cost import NetworkCost
from service.settings import Settings
from service.uploads.rejected import Rejected
from service.uploads.stream import as_problem
from service.uploads.validator import validated

CACHE_SIZE = 256
_cache: OrderedDict[str, NetworkCost] = OrderedDict()
_cache_lock = threading.Lock()


def _key(architecture: dict[str, Any], input_shape: list[int], num_classes: int) -> str:
    return json.dumps([architecture, [int(n) for n in input_shape], int(num_classes)], sort_keys=True)


def _cached(key: str) -> NetworkCost | None:
    with _cache_lock:
        cost = _cache.get(key)
        if cost is not None:
            _cache.move_to_end(key)
        return cost


def _remember(key: str, cost: NetworkCost) -> None:
    with _cache_lock:
        _cache[key] = cost
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


async def measured_cost(
    architecture: dict[str, Any],
    input_shape: list[int],
    num_classes: int,
    *,
    program: Sequence[str] | None,
    settings: Settings,
) -> NetworkCost:
    """One network of ``architecture`` for inputs of ``input_shape`` and ``num_classes`` logits. Raises
    :class:`~service.errors.Problem`: 422 on ``body.architecture`` for a network the engine cannot build or
    run on such inputs (an unknown model, an option its builder refuses), 503 when no validator can run."""
    key = _key(architecture, input_shape, num_classes)
    cost = _cached(key)
    if cost is not None:
        return cost
    request = {
        "kind": "architecture",
        "architecture": architecture,
        "input_shape": [int(n) for n in input_shape],
        "num_classes": int(num_classes),
    }
    try:
        async with validated(
            request, upload=None, program=program, settings=settings, field="body.architecture"
        ) as (answer, _):
            figures = answer["cost"]
    except Rejected as exc:
        raise as_problem(exc) from None
    cost = NetworkCost(
        int(figures["parameters"]), int(figures["buffers"]), int(figures["macs"]), int(figures["activations"])
    )
    _remember(key, cost)
    return cost
