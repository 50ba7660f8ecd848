"""Checking an uploaded checkpoint: safetensors (header checked first, then tensors read by name) or torch's
zip format read with ``torch.load(weights_only=True, mmap=True)``; either must be a flat ``{name: tensor}``
whose names and shapes match the declared architecture (compared on the meta device, before allocating
anything), with finite values; the model then runs a zero batch of the declared input shape. The accepted
weights are written back as canonical safetensors (the module's own dtypes), the only file the service keeps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sbengine.uploads.formats import Rejected, inspect_zip, parse_safetensors_header
from sbengine.uploads.messages import MAX_LISTED, listed, one_line
from sbengine.uploads.skeleton import meta_skeleton


def _describe(architecture: dict[str, Any]) -> str:
    """``fcn(width=20, depth=1)``: the options that differ from the architecture's defaults."""
    from sbengine.models import architecture_kwargs
    from sbengine.models.library import LIBRARIES

    if architecture["name"] in LIBRARIES:
        options = ", ".join(f"{k}={v}" for k, v in architecture.items() if k not in ("name", "model"))
        return f"{architecture['name']} {architecture['model']}({options})"
    defaults = architecture_kwargs(architecture["name"])
    options = ", ".join(f"{k}={v}" for k, v in architecture.items() if k != "name" and defaults.get(k) != v)
    return f"{architecture['name']}({options})"


def compare_state(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], *, model: str
) -> None:
    """Refuse (422) unless ``found`` has exactly the names and shapes of ``expected``; the problem names
    the first mismatching tensor, every missing and every unexpected name."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        {"name": k, "shape": list(found[k]), "expected": list(expected[k])}
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if mismatched:
        first = mismatched[0]
        parts.append(
            f"first mismatch {first['name']!r} has shape {tuple(first['shape'])}, expected "
            f"{tuple(first['expected'])}"
            + (f" ({len(mismatched)} tensors differ in shape)" if len(mismatched) > 1 else "")
        )
    if missing:
        parts.append(f"missing: {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected: {listed(unexpected)}")
    raise Rejected(
        f"the weights do not match {model}: " + "; ".join(parts),
        mismatched=mismatched[:MAX_LISTED],
        missing=missing[:MAX_LISTED],
        unexpected=unexpected[:MAX_LISTED],
    )


def _unpickling_reason(exc: BaseException) -> str:
    """The useful sentence of torch's weights_only refusal (not its advice to load untrusted files
    with weights_only=False)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    match = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed global[^\n]*)?(?:\n|$)", text)
    if match:
        return match.group(1).strip() + " is not allowed"
    return one_line(exc)


def _flat_state_dict(obj: Any) -> dict[str, Any]:
    import torch

    if not isinstance(obj, dict):
        raise Rejected(
            f"the checkpoint holds a {type(obj).__name__}, not a state_dict: save model.state_dict() "
            "(a flat {name: tensor} dict)"
        )
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise Rejected("the state_dict's keys must be strings")
        if not isinstance(value, torch.Tensor):
            raise Rejected(
                f"the state_dict's entry {key[:100]!r} is a {type(value).__name__}, not a tensor: save "
                "model.state_dict() alone (not a dict holding the optimizer, epochs, ...)"
            )
        if value.layout != torch.strided or value.is_quantized or value.is_complex():
            raise Rejected(f"the state_dict's entry {key[:100]!r} is not a plain dense real tensor")
        out[key] = value
    return out


def _load_checkpoint(path: Path, fmt: str, expected: dict, model: str, max_bytes: int) -> dict[str, Any]:
    import torch

    if fmt == "safetensors":
        header = parse_safetensors_header(path)
        compare_state(expected, {k: t.shape for k, t in header.tensors.items()}, model=model)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {name: fh.get_tensor(name) for name in expected}
    inspect_zip(path, max_total_bytes=max_bytes, what="the checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError for anything but tensors and containers of them
        raise Rejected(
            "the checkpoint is not a plain state_dict of tensors (it is loaded with weights_only=True, which "
            f"refuses everything else; save model.state_dict(), not the model): {_unpickling_reason(exc)}"
        ) from None
    tensors = _flat_state_dict(obj)
    compare_state(expected, {k: tuple(v.shape) for k, v in tensors.items()}, model=model)
    return tensors


def check_checkpoint(request: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from sbengine.models import build_model
    from sbengine.models.normalize import Normalized

    architecture, shape, num_classes, skeleton = meta_skeleton(request)
    model = f"{_describe(architecture)} for inputs {shape} and {num_classes} classes"
    reference = skeleton.state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items()}
    tensors = _load_checkpoint(
        Path(request["path"]), request["format"], expected, model, request["max_bytes"]
    )

    state = {}
    for name, ref in reference.items():
        tensor = tensors[name]
        if ref.dtype.is_floating_point != tensor.dtype.is_floating_point or tensor.dtype in (
            torch.bool,
            torch.complex64,
            torch.complex128,
        ):
            kind = "floating-point" if ref.dtype.is_floating_point else "integer"
            raise Rejected(f"tensor {name[:100]!r} is {tensor.dtype}; {model} needs a {kind} tensor there")
        converted = tensor.to(ref.dtype).contiguous().clone()
        if converted.is_floating_point() and not bool(torch.isfinite(converted).all()):
            raise Rejected(f"tensor {name[:100]!r} contains NaN or infinite values")
        state[name] = converted
    del tensors

    torch.manual_seed(0)
    network = build_model(architecture, input_shape=shape, num_classes=num_classes)
    network.load_state_dict(state, strict=True)
    network.eval()
    module = network
    normalization = request.get("normalization")
    if normalization:
        try:
            module = Normalized(network, input_shape=shape, **normalization)
        except ValueError as exc:
            raise Rejected(str(exc), field="body.normalization") from None
    try:
        with torch.no_grad():
            logits = module(torch.zeros((2, *shape)))
    except Exception as exc:
        raise Rejected(f"the model fails on a zero batch of shape {(2, *shape)}: {one_line(exc)}") from None
    if tuple(logits.shape) != (2, num_classes):
        raise Rejected(
            f"the model answers a batch of 2 with shape {tuple(logits.shape)}, not (2, {num_classes})",
            field="body.num_classes",
        )
    if not bool(torch.isfinite(logits).all()):
        raise Rejected("the model's output on a zero batch is not finite")
    from sbengine.models.cost import measure_cost

    # Measured once here, kept with the model: the service budgets jobs on it without importing torch.
    cost = measure_cost(module, shape, module=network)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(request["output"]))
    return {
        "architecture": architecture,
        "cost": cost,
        "tensors": len(state),
        "parameters": int(sum(p.numel() for p in network.parameters())),
    }
