"""One entry point from a JSON request (the API's and the CLI's) to a Dataset."""

from __future__ import annotations

from typing import Any

from sbengine.data.dataset import Dataset
from sbengine.data.presets import IMAGE_PRESETS, PRESET_NAMES, SYNTHETIC_PRESETS
from sbengine.data.synthetic import BlockSpec, SyntheticSpec, generate

_SYNTHETIC_KEYS = {
    "preset",
    "blocks",
    "n_train",
    "n_val",
    "n_test",
    "seed",
    "rotate",
    "width",
    "simple_blocks",
    "name",
}
_IMAGE_KEYS = {
    "preset",
    "n_train",
    "n_val",
    "n_test",
    "seed",
    "mnist_classes",
    "cifar_classes",
    "randomize",
    "name",
}


def build_dataset(
    request: dict[str, Any], *, raw_data_dir: str | None = None, download: bool = True
) -> Dataset:
    """Build the dataset a request describes: ``{"preset": NAME, ...overrides}`` or
    ``{"blocks": [...], ...}``.

    Raises ValueError with a one-line message for anything malformed, before doing any work.
    """
    preset = request.get("preset")
    if preset is not None and "blocks" in request:
        raise ValueError("give either 'preset' or 'blocks', not both")
    if preset in IMAGE_PRESETS:
        return _build_image(request, raw_data_dir=raw_data_dir, download=download)
    _reject_unknown(request, _SYNTHETIC_KEYS)
    if preset is not None:
        if preset not in SYNTHETIC_PRESETS:
            raise ValueError(f"unknown preset {preset!r} (choose from: {', '.join(PRESET_NAMES)})")
        p = SYNTHETIC_PRESETS[preset]
        blocks = list(p.blocks)
        defaults: dict[str, Any] = {
            "n_train": p.n_train,
            "n_val": p.n_val,
            "n_test": p.n_test,
            "simple_blocks": list(p.simple_blocks),
            "name": preset,
        }
    elif "blocks" in request:
        if not isinstance(request["blocks"], list) or not request["blocks"]:
            raise ValueError("'blocks' must be a non-empty list of block objects")
        blocks = []
        for i, b in enumerate(request["blocks"]):
            if not isinstance(b, dict):
                raise ValueError(f"blocks[{i}] must be an object")
            try:
                blocks.append(BlockSpec.from_dict(b))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"blocks[{i}]: {exc}") from None
        defaults = {"name": "custom"}
    else:
        raise ValueError("a dataset request needs 'preset' or 'blocks'")
    fields = {k: v for k, v in request.items() if k not in ("preset", "blocks")}
    spec = SyntheticSpec(blocks=blocks, **{**defaults, **fields})
    if not isinstance(spec.seed, int) or isinstance(spec.seed, bool) or spec.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {spec.seed!r}")
    ds = generate(spec)
    if preset is not None:
        ds.spec["preset"] = preset
    return ds


def _build_image(request: dict[str, Any], *, raw_data_dir: str | None, download: bool) -> Dataset:
    from sbengine.data.images import default_raw_data_dir
    from sbengine.data.mnist_cifar import VARIANTS, build_mnist_cifar

    _reject_unknown(request, _IMAGE_KEYS)
    mnist_classes, cifar_classes = VARIANTS[IMAGE_PRESETS[request["preset"]]]
    kwargs = {k: v for k, v in request.items() if k not in ("preset", "name")}
    kwargs.setdefault("mnist_classes", mnist_classes)
    kwargs.setdefault("cifar_classes", cifar_classes)
    kwargs["mnist_classes"] = tuple(kwargs["mnist_classes"])
    kwargs["cifar_classes"] = tuple(kwargs["cifar_classes"])
    kwargs.setdefault("n_val", 1000)
    root = raw_data_dir or default_raw_data_dir()
    ds = build_mnist_cifar(root=root, download=download, **kwargs)
    ds.name = request.get("name", request["preset"])
    ds.spec["preset"] = request["preset"]
    return ds


def _reject_unknown(request: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise ValueError(f"unknown dataset option {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
