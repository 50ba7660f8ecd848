"""The ONNX operators the engine runs with torch ops, so an uploaded graph is a differentiable module.

Why our own interpreter rather than a converter: onnx2torch 1.5.15 (the maintained converter) turned a
plain FCN into a module but failed on a torchvision resnet18 exported by torch 2.14 (opset 17 and 20: weights
arrive as ``Constant`` nodes; opset 19 ``Identity`` missing), and normalising graphs for it would still leave
us at the mercy of its coverage. The operators below are each one torch call with ONNX's attribute
conventions (documented in docs/uploads.md); they cover what torch.onnx (both exporters), tf2onnx and
Keras exports of feed-forward classifiers produce. A graph using anything else runs in onnxruntime instead
(forward only), and the model's ``capabilities`` name the operators that blocked the torch path.

Each op takes ``(inputs, attributes, opset)``: inputs as tensors (``None`` for an omitted optional input),
attributes as Python values; it returns a tensor or a tuple of tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

Op = Callable[[list[Any], dict[str, Any], int], Any]
# The attribute under which the interpreter passes the input's device to ops that create tensors (never an
# ONNX attribute name: those are identifiers).
DEVICE = "<device>"

# ONNX TensorProto data types to torch dtypes (those a classifier's graph computes with).
DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


def _ints(t: Any) -> list[int]:
    return [int(v) for v in t.reshape(-1).tolist()] if isinstance(t, torch.Tensor) else [int(v) for v in t]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Op:
    return lambda i, a, v: fn(i[0])


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Op:
    return lambda i, a, v: fn(i[0], i[1])


def _pads(pads: list[int], spatial: int) -> tuple[list[int], list[int]]:
    return pads[:spatial], pads[spatial:]


def _auto_pad(x: torch.Tensor, a: dict[str, Any], kernel: list[int], strides: list[int], dil: list[int]):
    """ONNX pads (begins then ends per spatial axis), resolved from auto_pad when set."""
    spatial = len(kernel)
    mode = a.get("auto_pad", "NOTSET")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode in ("NOTSET", "VALID"):
        pads = list(a.get("pads", [0] * 2 * spatial)) if mode == "NOTSET" else [0] * 2 * spatial
        return _pads(pads, spatial)
    begins, ends = [], []
    for d in range(spatial):
        size = x.shape[2 + d]
        out = math.ceil(size / strides[d])
        total = max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 - size)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins, ends


def _torch_pad(begins: list[int], ends: list[int]) -> list[int]:
    """ONNX begin/end pads per axis to F.pad's last-axis-first pairs."""
    out: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        out += [b, e]
    return out


def _conv(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, w, b = i[0], i[1], i[2] if len(i) > 2 else None
    spatial = w.dim() - 2
    kernel = list(a.get("kernel_shape", w.shape[2:]))
    strides, dil = list(a.get("strides", [1] * spatial)), list(a.get("dilations", [1] * spatial))
    begins, ends = _auto_pad(x, a, kernel, strides, dil)
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    if begins == ends:
        return conv(x, w, b, strides, begins, dil, int(a.get("group", 1)))
    return conv(F.pad(x, _torch_pad(begins, ends)), w, b, strides, 0, dil, int(a.get("group", 1)))


def _pool(kind: str) -> Op:
    def pool(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
        x = i[0]
        kernel = list(a["kernel_shape"])
        spatial = len(kernel)
        strides = list(a.get("strides", [1] * spatial))
        dil = list(a.get("dilations", [1] * spatial))
        begins, ends = _auto_pad(x, a, kernel, strides, dil)
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial - 1]
            if begins != ends or any(2 * p > k for p, k in zip(begins, kernel, strict=True)):
                x = F.pad(x, _torch_pad(begins, ends), value=-math.inf)
                begins = [0] * spatial
            return fn(x, kernel, strides, begins, dil, ceil)
        if any(d != 1 for d in dil):
            raise NotImplementedError("AveragePool with dilations")
        include = bool(a.get("count_include_pad", 0))
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
        if begins == ends and all(2 * p <= k for p, k in zip(begins, kernel, strict=True)):
            return fn(x, kernel, strides, begins, ceil, include)
        pads = _torch_pad(begins, ends)
        if include:
            return fn(F.pad(x, pads), kernel, strides, 0, ceil, True)
        # Padding left out of the count, unevenly: the sum over real values divided by their number.
        ones = F.pad(torch.ones_like(x[:, :1]), pads)
        return fn(F.pad(x, pads), kernel, strides, 0, ceil, True) / fn(ones, kernel, strides, 0, ceil, True)

    return pool


def _gemm(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, w = i[0], i[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    out = float(a.get("alpha", 1.0)) * (x @ w)
    if len(i) > 2 and i[2] is not None:
        out = out + float(a.get("beta", 1.0)) * i[2]
    return out


def _batch_norm(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, scale, bias, mean, var = i[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(a.get("epsilon", 1e-5)))


def _layer_norm(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, scale = i[0], i[1]
    bias = i[2] if len(i) > 2 else None
    axis = _axis(int(a.get("axis", -1)), x.dim())
    return F.layer_norm(x, x.shape[axis:], scale, bias, float(a.get("epsilon", 1e-5)))


def _flatten(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x = i[0]
    axis = _axis(int(a.get("axis", 1)), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, shape = i[0], _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[d] if n == 0 else n for d, n in enumerate(shape)]
    return x.reshape(shape)


def _axes(i: list[Any], a: dict[str, Any], position: int) -> list[int] | None:
    if len(i) > position and i[position] is not None:
        return _ints(i[position])
    return list(a["axes"]) if "axes" in a else None


def _squeeze(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, axes = i[0], _axes(i, a, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(d, x.dim()) for d in axes))


def _unsqueeze(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, axes = i[0], _axes(i, a, 1) or []
    rank = x.dim() + len(axes)
    for d in sorted(_axis(d, rank) for d in axes):
        x = x.unsqueeze(d)
    return x


def _reduce(fn: str) -> Op:
    def reduce(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
        x = i[0]
        axes = _axes(i, a, 1)
        keep = bool(a.get("keepdims", 1))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        dims = tuple(_axis(d, x.dim()) for d in axes)
        if fn == "max":
            return x.amax(dims, keepdim=keep)
        if fn == "min":
            return x.amin(dims, keepdim=keep)
        return getattr(x, fn)(dims, keepdim=keep)

    return reduce


def _softmax(log: bool) -> Op:
    def softmax(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
        x = i[0]
        axis = _axis(int(a.get("axis", -1 if v >= 13 else 1)), x.dim())
        if v < 13:  # older opsets: softmax over the flattened trailing axes
            flat = x.reshape(math.prod(x.shape[:axis]), -1)
            out = F.log_softmax(flat, 1) if log else F.softmax(flat, 1)
            return out.reshape(x.shape)
        return F.log_softmax(x, axis) if log else F.softmax(x, axis)

    return softmax


def _gather(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x, idx = i[0], i[1].long()
    axis = _axis(int(a.get("axis", 0)), x.dim())
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


def _slice(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x = i[0]
    if v < 10:
        starts, ends, axes = list(a["starts"]), list(a["ends"]), a.get("axes")
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(i[1]), _ints(i[2])
        axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else None
        steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    axes = list(axes) if axes is not None else list(range(len(starts)))
    index: list[Any] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise NotImplementedError("Slice with a non-positive step")
        size = x.shape[_axis(axis, x.dim())]
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(0, min(size, end + size if end < 0 else end))
        index[_axis(axis, x.dim())] = slice(start, end, step)
    return x[tuple(index)]


def _concat(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    tensors = [t for t in i if t is not None]
    dtype = torch.result_type(*tensors) if len(tensors) > 1 else tensors[0].dtype
    return torch.cat([t.to(dtype) for t in tensors], _axis(int(a["axis"]), tensors[0].dim()))


def _clip(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x = i[0]
    if v < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low = i[1] if len(i) > 1 and i[1] is not None else None
        high = i[2] if len(i) > 2 and i[2] is not None else None
    return torch.clamp(x, low, high)


def _pad(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    x = i[0]
    pads = list(a["pads"]) if v < 11 else _ints(i[1])
    value = float(a.get("value", 0.0)) if v < 11 else float(i[2]) if len(i) > 2 and i[2] is not None else 0.0
    if v >= 18 and len(i) > 3 and i[3] is not None:
        raise NotImplementedError("Pad with axes")
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = x.dim()
    torch_pads = _torch_pad(pads[:rank], pads[rank:])
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])


def _constant(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    if "value" in a:
        return a["value"]
    device = a.get(DEVICE)
    for key, dtype in (("value_float", torch.float32), ("value_int", torch.int64)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype, device=device)
    for key, dtype in (("value_floats", torch.float32), ("value_ints", torch.int64)):
        if key in a:
            return torch.tensor(list(a[key]), dtype=dtype, device=device)
    raise NotImplementedError("Constant without a numeric value")


def _split(i: list[Any], a: dict[str, Any], v: int, outputs: int) -> tuple[torch.Tensor, ...]:
    x = i[0]
    axis = _axis(int(a.get("axis", 0)), x.dim())
    sizes = _ints(i[1]) if len(i) > 1 and i[1] is not None else list(a.get("split", []))
    if not sizes:
        count = int(a.get("num_outputs", outputs))
        chunk = math.ceil(x.shape[axis] / count)
        return tuple(torch.split(x, chunk, axis))
    return tuple(torch.split(x, sizes, axis))


def _gelu(i: list[Any], a: dict[str, Any], v: int) -> torch.Tensor:
    approx = a.get("approximate", b"none")
    return F.gelu(i[0], approximate=approx.decode() if isinstance(approx, bytes) else approx)


OPS: dict[str, Op] = {
    "Identity": _unary(lambda x: x),
    "Dropout": lambda i, a, v: i[0],
    "Constant": _constant,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": lambda i, a, v: (
        torch.div(i[0], i[1], rounding_mode="trunc")
        if not i[0].is_floating_point()
        else torch.div(i[0], i[1])
    ),
    "Pow": _binary(torch.pow),
    "Min": lambda i, a, v: _fold(torch.minimum, i),
    "Max": lambda i, a, v: _fold(torch.maximum, i),
    "Sum": lambda i, a, v: _fold(torch.add, i),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Erf": _unary(torch.erf),
    "Reciprocal": _unary(torch.reciprocal),
    "Relu": _unary(F.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "LeakyRelu": lambda i, a, v: F.leaky_relu(i[0], float(a.get("alpha", 0.01))),
    "Elu": lambda i, a, v: F.elu(i[0], float(a.get("alpha", 1.0))),
    "Selu": lambda i, a, v: F.selu(i[0]),
    "PRelu": lambda i, a, v: torch.where(i[0] >= 0, i[0], i[0] * i[1]),
    "HardSigmoid": lambda i, a, v: torch.clamp(
        float(a.get("alpha", 0.2)) * i[0] + float(a.get("beta", 0.5)), 0, 1
    ),
    "HardSwish": _unary(F.hardswish),
    "Gelu": _gelu,
    "Softmax": _softmax(log=False),
    "LogSoftmax": _softmax(log=True),
    "Clip": _clip,
    "MatMul": _binary(torch.matmul),
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda i, a, v: i[0].mean(tuple(range(2, i[0].dim())), keepdim=True),
    "GlobalMaxPool": lambda i, a, v: i[0].amax(tuple(range(2, i[0].dim())), keepdim=True),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda i, a, v: i[0].permute(
        list(a["perm"]) if "perm" in a else list(reversed(range(i[0].dim())))
    ),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": _concat,
    "Shape": lambda i, a, v: torch.tensor(
        list(i[0].shape)[a.get("start", 0) : a.get("end", None)], dtype=torch.int64, device=i[0].device
    ),
    "Gather": _gather,
    "Slice": _slice,
    "Cast": lambda i, a, v: i[0].to(DTYPES[int(a["to"])]),
    "Expand": lambda i, a, v: i[0].expand(torch.broadcast_shapes(tuple(i[0].shape), tuple(_ints(i[1])))),
    "ConstantOfShape": lambda i, a, v: torch.full(
        _ints(i[0]),
        a["value"].reshape(-1)[0].item() if "value" in a else 0.0,
        dtype=a["value"].dtype if "value" in a else torch.float32,
        device=i[0].device,
    ),
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "Pad": _pad,
    "Where": lambda i, a, v: torch.where(i[0].bool(), i[1], i[2]),
    "Equal": _binary(torch.eq),
    "Greater": _binary(torch.gt),
    "Less": _binary(torch.lt),
    "Not": _unary(torch.logical_not),
}


def _fold(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tensors: list[Any]) -> torch.Tensor:
    out = tensors[0]
    for t in tensors[1:]:
        out = fn(out, t)
    return out


def run_op(op: str, inputs: list[Any], attributes: dict[str, Any], opset: int, outputs: int) -> Any:
    if op == "Split":
        return _split(inputs, attributes, opset, outputs)
    return OPS[op](inputs, attributes, opset)


SUPPORTED = frozenset(OPS) | {"Split"}
