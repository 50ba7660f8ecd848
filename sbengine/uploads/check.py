"""``python -m sbengine.uploads``: validate one uploaded checkpoint or dataset, in a process of its own.

Started by the API (service/uploads/validator.py, wired to this program by sbserver) with a JSON request on
stdin; answers one JSON line on stdout: ``{"ok": true, ...}`` or ``{"ok": false, "status": 422, "detail": ..., "field": ..., "extra": {}}``.
Before importing torch or numpy it caps its own address space, CPU time and the size of files it writes,
so a hostile file can at worst make it fail. Nothing in the file is executed, and its framing (formats.py)
is checked before any library reads it:

- checkpoints: safetensors (header checked first, then tensors read by name) or torch's zip format read
  with ``torch.load(weights_only=True, mmap=True)``; either must be a flat ``{name: tensor}`` whose names
  and shapes match the declared architecture (compared on the meta device, before allocating anything),
  with finite values; the model then runs a zero batch of the declared input shape. The accepted weights
  are written back as canonical safetensors (the module's own dtypes), the only file the service keeps.
- datasets: .npz (``allow_pickle=False``; every member's .npy header is read and checked against its
  declared size before the array is) or safetensors, keys ``x``/``y`` (+ ``split``) or
  ``x_train``/``y_train``/``x_val``/``y_val``/``x_test``/``y_test``; finite float inputs, integer labels
  in range, and the declared feature blocks resolved to canonical index sets. The result is saved in
  the engine's own format (sbengine Dataset: arrays.npz + dataset.json), so audits read it unchanged.
"""

from __future__ import annotations

import json
import math
import re
import resource
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Any

from sbengine.uploads.formats import Rejected, check_framing, inspect_zip, parse_safetensors_header

SPLITS = ("train", "val", "test")
MAX_LISTED = 20


def _limit(limits: dict[str, int]) -> None:
    for name, value in (
        (resource.RLIMIT_AS, limits.get("memory_bytes")),
        (resource.RLIMIT_CPU, limits.get("cpu_seconds")),
        (resource.RLIMIT_FSIZE, limits.get("file_bytes")),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is None:
            continue
        _, hard = resource.getrlimit(name)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(name, (soft, hard))


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:500]


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(repr(n[:100]) for n in names[:MAX_LISTED]) + more


# --- checkpoints ---------------------------------------------------------------------------------------


def _describe(architecture: dict[str, Any]) -> str:
    """``fcn(width=20, depth=1)``: the options that differ from the architecture's defaults."""
    from sbengine.models import architecture_kwargs

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
        parts.append(f"missing: {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected: {_listed(unexpected)}")
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
    return _one_line(exc)


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

    from sbengine.models import build_model, resolve_architecture
    from sbengine.models.normalize import Normalized

    shape = tuple(int(n) for n in request["input_shape"])
    num_classes = int(request["num_classes"])
    try:
        architecture = resolve_architecture(request["architecture"])
        with torch.device("meta"):
            skeleton = build_model(architecture, input_shape=shape, num_classes=num_classes)
    except ValueError as exc:
        raise Rejected(str(exc), field="body.architecture") from None
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
        raise Rejected(f"the model fails on a zero batch of shape {(2, *shape)}: {_one_line(exc)}") from None
    if tuple(logits.shape) != (2, num_classes):
        raise Rejected(
            f"the model answers a batch of 2 with shape {tuple(logits.shape)}, not (2, {num_classes})",
            field="body.num_classes",
        )
    if not bool(torch.isfinite(logits).all()):
        raise Rejected("the model's output on a zero batch is not finite")
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(request["output"]))
    return {
        "architecture": architecture,
        "tensors": len(state),
        "parameters": int(sum(p.numel() for p in network.parameters())),
    }


# --- datasets ------------------------------------------------------------------------------------------

_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: never object, structured, strings or complex


def _npz_arrays(path: Path, max_bytes: int) -> dict[str, Any]:
    import numpy as np

    members = inspect_zip(path, max_total_bytes=max_bytes, what="the .npz file")
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for member in members:
            if not member.name.endswith(".npy") or "/" in member.name:
                raise Rejected(f"the .npz member {member.name[:100]!r} is not an array (.npy)")
            key = member.name[: -len(".npy")]
            if key in arrays:
                raise Rejected(f"the .npz file holds the array {key[:100]!r} twice")
            with archive.open(member.name) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        array_shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        array_shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                except ValueError as exc:
                    raise Rejected(f"array {key[:100]!r}: unreadable .npy header: {_one_line(exc)}") from None
                if dtype.hasobject or (
                    dtype.kind not in _ARRAY_KINDS and not (key == "split" and dtype.kind == "U")
                ):
                    raise Rejected(
                        f"array {key[:100]!r} has dtype {dtype}; numbers only (no objects or pickles)"
                    )
                needed = math.prod(array_shape) * dtype.itemsize
                if needed > member.size:
                    raise Rejected(
                        f"array {key[:100]!r} claims shape {tuple(array_shape)} ({needed} bytes) but its member "
                        f"holds {member.size} bytes"
                    )
            with archive.open(member.name) as fh:
                try:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise Rejected(f"array {key[:100]!r} cannot be read: {_one_line(exc)}") from None
    return arrays


def _safetensors_arrays(path: Path) -> dict[str, Any]:
    header = parse_safetensors_header(path)
    for name, info in header.tensors.items():
        if info.dtype in ("BF16",):
            raise Rejected(f"array {name[:100]!r}: bfloat16 is not supported for datasets; use float32")
    from safetensors.numpy import load_file

    return load_file(str(path))


def _split_arrays(arrays: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    import numpy as np

    split_keys = {f"{a}_{s}" for a in ("x", "y") for s in SPLITS}
    plain = {"x", "y", "split"}
    keys = set(arrays)
    if keys & plain and keys & split_keys or not keys <= plain | split_keys:
        unknown = sorted(keys - plain - split_keys) or sorted(keys)
        raise Rejected(
            f"unexpected arrays {_listed(unknown)}: give 'x' and 'y' (and optionally 'split'), or "
            "'x_train'/'y_train', 'x_val'/'y_val', 'x_test'/'y_test'"
        )
    if keys & plain:
        if not {"x", "y"} <= keys:
            raise Rejected("the file needs both an 'x' (inputs) and a 'y' (labels) array")
        x, y = arrays["x"], arrays["y"]
        _check_pair("", x, y)
        if "split" not in arrays:
            return {"test": (x, y)}
        split = arrays["split"]
        if split.ndim != 1 or split.shape[0] != x.shape[0]:
            raise Rejected(
                f"'split' must be 1-D with one entry per row of x ({x.shape[0]}), got {split.shape}"
            )
        if split.dtype.kind == "U":
            codes = np.full(split.shape, -1, dtype=np.int64)
            for i, name in enumerate(SPLITS):
                codes[split == name] = i
        elif split.dtype.kind in "iu":
            codes = split.astype(np.int64)
        else:
            raise Rejected("'split' must hold 0/1/2 or 'train'/'val'/'test' for each row")
        if ((codes < 0) | (codes > 2)).any():
            raise Rejected("'split' must hold 0/1/2 or 'train'/'val'/'test' for each row")
        return {name: (x[codes == i], y[codes == i]) for i, name in enumerate(SPLITS) if (codes == i).any()}
    out = {}
    for name in SPLITS:
        have = {f"x_{name}", f"y_{name}"} & keys
        if len(have) == 1:
            raise Rejected(f"'{have.pop()}' needs its partner ({'y' if f'x_{name}' in keys else 'x'}_{name})")
        if have:
            _check_pair(f"_{name}", arrays[f"x_{name}"], arrays[f"y_{name}"])
            out[name] = (arrays[f"x_{name}"], arrays[f"y_{name}"])
    return out


def _check_pair(suffix: str, x: Any, y: Any) -> None:
    if x.ndim < 2:
        raise Rejected(
            f"'x{suffix}' must have one row per example and at least one feature, got shape {x.shape}"
        )
    if x.dtype.kind not in "iuf":
        raise Rejected(f"'x{suffix}' must hold numbers (int or float), got {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise Rejected(
            f"'y{suffix}' must be 1-D with one label per row of x{suffix} ({x.shape[0]}), got {y.shape}"
        )
    if y.dtype.kind not in "iu":
        raise Rejected(f"'y{suffix}' must hold integer class labels, got {y.dtype}")
    if x.shape[0] == 0:
        raise Rejected(f"'x{suffix}' has no rows")


def _blocks(declared: list[dict[str, Any]], input_shape: tuple[int, ...]) -> list[Any]:
    from sbengine.data.dataset import FeatureBlock, image_region_indices

    size = math.prod(input_shape)
    blocks = []
    for i, block in enumerate(declared):
        field = f"body.blocks.{i}"
        if block.get("indices") is not None:
            indices = block["indices"]
            bad = next((j for j in indices if not 0 <= j < size), None)
            if bad is not None:
                raise Rejected(
                    f"index {bad} is out of range: the inputs have {size} coordinates (0..{size - 1})",
                    field=f"{field}.indices",
                )
            if len(set(indices)) != len(indices):
                raise Rejected("must not repeat an index", field=f"{field}.indices")
            blocks.append(FeatureBlock(name=block["name"], kind="indices", indices=tuple(indices)))
            continue
        if len(input_shape) != 3:
            raise Rejected(
                f"channel/row/column boxes need image inputs (C, H, W); these inputs are {input_shape}: "
                "give 'indices' instead",
                field=field,
            )
        box = {k: block.get(k) for k in ("channels", "rows", "cols")}
        for axis, (key, value) in enumerate(box.items()):
            if value is not None and value[1] > input_shape[axis]:
                raise Rejected(
                    f"[{value[0]}, {value[1]}) reaches past the {input_shape[axis]} {key} of the inputs "
                    f"{input_shape}",
                    field=f"{field}.{key}",
                )
        indices = image_region_indices(
            input_shape, **{k: tuple(v) if v is not None else None for k, v in box.items()}
        )
        params = {k: list(v) for k, v in box.items() if v is not None}
        blocks.append(FeatureBlock(name=block["name"], kind="image_region", indices=indices, params=params))
    return blocks


def check_dataset(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from sbengine.data.dataset import Dataset

    path, max_bytes = Path(request["path"]), int(request["max_bytes"])
    arrays = _npz_arrays(path, max_bytes) if request["format"] == "zip" else _safetensors_arrays(path)
    splits = _split_arrays(arrays)
    del arrays
    shapes = {name: tuple(x.shape[1:]) for name, (x, _) in splits.items()}
    input_shape = next(iter(shapes.values()))
    if any(s != input_shape for s in shapes.values()):
        raise Rejected(f"the splits' inputs differ in shape: {shapes}")
    max_samples = int(request["max_samples"])
    clean = {}
    for name, (x, y) in splits.items():
        if x.shape[0] > max_samples:
            raise Rejected(
                f"the {name} split has {x.shape[0]} rows; this server's limit is {max_samples} (SBAUDIT_MAX_SAMPLES)"
            )
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x32)
        if not finite.all():
            row = int(np.argwhere(~finite.reshape(x32.shape[0], -1).all(axis=1))[0][0])
            raise Rejected(f"the {name} inputs contain NaN or infinite values (first in row {row})")
        clean[name] = (x32, np.ascontiguousarray(y, dtype=np.int64))
    del splits
    labels = np.concatenate([y for _, y in clean.values()])
    low, high = int(labels.min()), int(labels.max())
    declared_classes = request.get("num_classes")
    num_classes = int(declared_classes) if declared_classes is not None else max(high + 1, 2)
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise Rejected(
            f"label {bad} is outside 0..{num_classes - 1}"
            + (" (num_classes)" if declared_classes is not None else ""),
            field="body.num_classes" if declared_classes is not None else "body.file",
        )
    blocks = _blocks(request["blocks"], input_shape)
    simple = request.get("simple_blocks") or [0]
    dataset = Dataset(
        name=request.get("name") or "uploaded dataset",
        splits=clean,
        input_shape=input_shape,
        num_classes=num_classes,
        blocks=blocks,
        simple_blocks=list(simple),
        rotation=None,
        seed=0,
        spec={"kind": "upload", "sha256": request.get("sha256")},
    )
    dataset.save(Path(request["output"]))
    return {"description": dataset.describe()}


# --- entry point ---------------------------------------------------------------------------------------


def _unavailable(exc: BaseException) -> dict[str, Any]:
    """The validator itself cannot run (a server problem, not the client's file)."""
    traceback.print_exc(file=sys.stderr)
    return {
        "ok": False,
        "status": 503,
        "field": "body.file",
        "detail": "the upload validator cannot start on this server (see its log; is "
        f"SBAUDIT_UPLOAD_CHECK_MEMORY_BYTES large enough?): {type(exc).__name__}",
    }


def handle(request: dict[str, Any]) -> dict[str, Any]:
    try:  # the libraries first: failing to load them is the server's problem, not the file's
        import numpy  # noqa: F401

        if request["kind"] == "checkpoint":
            import safetensors.torch  # noqa: F401
            import torch  # noqa: F401

            import sbengine.models  # noqa: F401
    except (ImportError, OSError, MemoryError) as exc:
        return _unavailable(exc)
    try:
        kind = request["kind"]
        if kind not in ("checkpoint", "dataset"):
            raise ValueError(f"unknown request kind {kind!r}")
        framing = check_framing(Path(request["path"]), kind=kind, max_total_bytes=request["max_bytes"])
        if kind == "checkpoint":
            request = {**request, "format": "safetensors" if framing == "safetensors" else "pytorch"}
            return {"ok": True, "format": request["format"], **check_checkpoint(request)}
        request = {**request, "format": framing}
        return {"ok": True, "format": "npz" if framing == "zip" else "safetensors", **check_dataset(request)}
    except Rejected as exc:
        return {"ok": False, **exc.as_dict()}
    except MemoryError:
        return {
            "ok": False,
            "status": 422,
            "field": "body.file",
            "detail": "validating the file needs more memory than this server allows "
            "(SBAUDIT_UPLOAD_CHECK_MEMORY_BYTES)",
        }
    except Exception as exc:  # a reader choking on malformed content: the client's file, not our bug
        traceback.print_exc(file=sys.stderr)
        return {
            "ok": False,
            "status": 422,
            "field": "body.file",
            "detail": f"unreadable file: {_one_line(exc)}",
        }


def main() -> int:
    request = json.loads(sys.stdin.read())
    _limit(request.get("limits") or {})
    answer = handle(request)
    sys.stdout.write(json.dumps(answer, allow_nan=False) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
