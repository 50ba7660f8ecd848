"""Checking an uploaded ONNX graph (a model from any framework, no code), in the validator's sandbox.

In order, cheapest first, so a hostile file fails before anything expensive runs:

1. the protobuf parses (``onnx.load_model_from_string``; the file's size is already capped by the upload);
2. structure: operator domains (the standard one and ``ai.onnx.ml`` only: no custom operators, no local
   functions), the standard opset within ``MIN_OPSET..`` what the installed onnx knows, at most
   ``MAX_NODES`` nodes and ``MAX_INITIALIZERS`` initializers, no control flow (Loop, Scan, If: a
   classifier's forward pass needs none, and a loop is how a graph computes forever), no external data
   files, no sparse initializers, and every stored tensor's declared size matching the bytes it carries
   (a 2 GB claim over a few bytes is refused before anything allocates it), in total under the upload limit;
3. ``onnx.checker.check_model`` (types, topological order, attributes);
4. one graph input (a batch dimension first, then the example's shape: from the graph, else declared) and
   a floating-point output of shape (batch, classes);
5. onnxruntime loads it and runs random inputs: that is the reference;
6. the torch interpreter (sbengine/models/onnx_ops.py) runs the same inputs; when every operator is
   implemented and the largest difference is within ``RTOL`` of the output's scale the model runs in torch
   (differentiable), otherwise in onnxruntime (forward only), and the answer says which operators or what
   difference blocked the torch path;
7. the cost of one example (sbengine/models/cost.py on the torch path; a graph walk otherwise).

The accepted file is stored as sent.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from sbengine.uploads.formats import Rejected
from sbengine.uploads.messages import listed, one_line

MIN_OPSET = 9
MAX_NODES = 100_000
MAX_INITIALIZERS = 100_000
# The interpreter must agree with onnxruntime within this fraction of the output's largest magnitude.
RTOL = 1e-4
CHECK_ROWS = 8
ALLOWED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
CONTROL_FLOW = {"Loop", "Scan", "If", "SequenceMap"}
FLOAT_TYPES = {1: "float32", 11: "float64"}
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def _parse(path: Path) -> Any:
    import onnx
    from google.protobuf.message import DecodeError

    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04" or (data[8:9] == b"{" and b'"dtype"' in data[:4096]):
        raise Rejected(
            "architecture is required for a checkpoint (safetensors or torch.save); only an ONNX graph "
            "describes itself",
            field="body.architecture",
        )
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise Rejected(f"not an ONNX model (the protobuf does not parse): {one_line(exc)}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise Rejected("not an ONNX model: it has no graph (or an empty one)")
    return model


def _claimed_bytes(tensor: Any, where: str) -> int:
    """A stored tensor's declared size, refused unless it lives in the file and matches the bytes there."""
    from onnx import TensorProto

    if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
        raise Rejected(
            f"{where} refers to external data files; export the weights inside the .onnx file "
            "(torch.onnx.export(..., external_data=False); onnx.save_model(..., save_as_external_data=False))"
        )
    if any(d < 0 for d in tensor.dims):
        raise Rejected(f"{where} declares a negative dimension")
    count = math.prod(tensor.dims)
    itemsize = _ITEMSIZE.get(tensor.data_type)
    if itemsize is None:
        raise Rejected(f"{where} has an unsupported data type ({tensor.data_type})")
    claimed = count * itemsize
    if tensor.raw_data:
        present = len(tensor.raw_data)
    else:
        present = itemsize * max(
            len(tensor.float_data),
            len(tensor.int32_data),
            len(tensor.int64_data),
            len(tensor.double_data),
            len(tensor.uint64_data),
            len(tensor.string_data),
        )
        if tensor.data_type in (10, 16, 4, 5, 2, 3, 9):  # stored one per int32 field
            present = len(tensor.int32_data) * itemsize
    if present != claimed:
        raise Rejected(
            f"{where} declares {tuple(tensor.dims)} ({claimed:,} bytes) but carries {present:,} bytes"
        )
    return claimed


def _walk(model: Any, max_bytes: int) -> tuple[int, list[str]]:
    """Structure checks over every graph; returns (node count, operator names)."""
    import onnx

    if len(model.functions):
        raise Rejected("the model defines local functions (custom operators); export without them")
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            raise Rejected(
                f"operator domain {opset.domain[:100]!r} is not allowed: only the standard ONNX operators "
                "and ai.onnx.ml (custom operators would need code on the server)"
            )
    standard = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    newest = onnx.defs.onnx_opset_version()
    if standard and not MIN_OPSET <= max(standard) <= newest:
        raise Rejected(f"opset {max(standard)} is outside the supported range {MIN_OPSET}..{newest}")
    # A graph of ai.onnx.ml operators only (onnxmltools' XGBoost and LightGBM) imports no standard opset.
    if not standard and any(node.domain in ("", "ai.onnx") for node in model.graph.node):
        raise Rejected("the graph uses standard ONNX operators but imports no standard opset")
    graph = model.graph
    if len(graph.sparse_initializer):
        raise Rejected("sparse initializers are not supported; store the weights dense")
    if len(graph.initializer) > MAX_INITIALIZERS:
        raise Rejected(
            f"the graph has {len(graph.initializer):,} initializers (at most {MAX_INITIALIZERS:,})"
        )
    if len(graph.node) > MAX_NODES:
        raise Rejected(f"the graph has {len(graph.node):,} nodes (at most {MAX_NODES:,})")
    total = 0
    for init in graph.initializer:
        total += _claimed_bytes(init, f"initializer {init.name[:100]!r}")
    ops = set()
    for node in graph.node:
        if node.domain not in ALLOWED_DOMAINS:
            raise Rejected(f"node {node.name[:100]!r} uses the custom operator domain {node.domain[:100]!r}")
        if node.op_type in CONTROL_FLOW:
            raise Rejected(
                f"control flow ({node.op_type}) is not supported: a classifier's forward pass needs none"
            )
        ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise Rejected(f"node {node.name[:100]!r} holds a subgraph; control flow is not supported")
            if attr.type == onnx.AttributeProto.TENSOR:
                total += _claimed_bytes(attr.t, f"the tensor of node {node.name[:100]!r}")
            if attr.type in (onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS):
                raise Rejected("sparse tensors are not supported")
        if total > max_bytes:
            break
    if total > max_bytes:
        raise Rejected(f"the graph's tensors declare {total:,} bytes, over this server's upload limit")
    return len(graph.node), sorted(ops)


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _signature(model: Any, request: dict[str, Any]) -> tuple[Any, tuple[int, ...], int | None, Any, int]:
    """(input, example shape, fixed batch size or None, output, classes)."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise Rejected(f"the graph must take one input tensor, it takes {len(inputs)}")
    (graph_input,) = inputs
    if not graph_input.type.HasField("tensor_type"):
        raise Rejected("the graph's input is not a tensor")
    if graph_input.type.tensor_type.elem_type not in FLOAT_TYPES:
        raise Rejected("the graph's input must be float32 or float64 (the dataset's inputs are float32)")
    dims = _dims(graph_input)
    declared = request.get("input_shape")
    if len(dims) < 2 and not declared:
        raise Rejected("the graph's input needs a batch dimension first, then the example's shape")
    example = dims[1:]
    if declared:
        declared = [int(n) for n in declared]
        if len(example) != len(declared) or any(
            g is not None and g != d for g, d in zip(example, declared, strict=True)
        ):
            raise Rejected(
                f"the graph takes examples of shape {tuple(example)}, declared {tuple(declared)}",
                field="body.input_shape",
            )
        shape = tuple(declared)
    elif any(n is None or n < 1 for n in example):
        raise Rejected(
            f"the graph leaves the example shape open ({tuple(example)}): declare input_shape",
            field="body.input_shape",
        )
    else:
        shape = tuple(int(n) for n in example)
    limit = request.get("max_input_size")
    if limit and math.prod(shape) > int(limit):
        raise Rejected(
            f"the graph's examples of shape {shape} have {math.prod(shape):,} values, over this server's "
            f"limit of {int(limit):,} (SBAUDIT_MAX_INPUT_SIZE)",
            field="body.input_shape",
        )
    batch = dims[0] if dims and dims[0] else None
    outputs = [
        o
        for o in graph.output
        if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in FLOAT_TYPES
    ]
    if not outputs:
        raise Rejected(
            "the graph has no floating-point output of scores (a scikit-learn classifier: export with "
            "options={id(model): {'zipmap': False}})"
        )
    output = outputs[0]
    out_dims = _dims(output)
    classes = out_dims[-1] if len(out_dims) == 2 and out_dims[-1] else None
    if request.get("num_classes") and classes and int(request["num_classes"]) != classes:
        raise Rejected(
            f"the graph's output {output.name[:100]!r} has {classes} classes, "
            f"declared {request['num_classes']}",
            field="body.num_classes",
        )
    classes = classes or request.get("num_classes")
    if not classes:
        raise Rejected(
            "the graph leaves the number of classes open: declare num_classes", field="body.num_classes"
        )
    if request.get("max_classes") and int(classes) > int(request["max_classes"]):
        raise Rejected(
            f"the graph has {classes} classes, over this server's limit of {request['max_classes']} "
            "(SBAUDIT_MAX_CLASSES)",
            field="body.num_classes",
        )
    return graph_input, shape, batch, output, int(classes)


def _max_relative(a: Any, b: Any) -> float:
    scale = max(float(b.abs().max()), 1e-6)
    return float((a.double() - b.double()).abs().max()) / scale


def _graph_cost(model: Any, shape: tuple[int, ...], classes: int) -> dict[str, int]:
    """The cost of a graph run by onnxruntime: every stored value (initializers and the numeric
    attributes of ai.onnx.ml operators, e.g. a tree ensemble's nodes) counted as one multiply-add per
    example, an upper bound for trees and linear models, which use each at most once."""
    import onnx

    values = sum(math.prod(i.dims) for i in model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.INTS):
                values += len(attr.floats) + len(attr.ints)
    return {
        "parameters": int(values),
        "buffers": 0,
        "macs": int(max(values, 1)),
        "activations": int(math.prod(shape) + 2 * classes),
    }


def check_onnx(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    from sbengine.models.cost import measure_cost
    from sbengine.models.onnx_graph import (
        OnnxRuntimeModule,
        OnnxTorch,
        opset_of,
        output_kind,
        unsupported_ops,
    )

    path = Path(request["path"])
    model = _parse(path)
    nodes, ops = _walk(model, int(request["max_bytes"]))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise Rejected(f"the ONNX checker refuses the graph: {one_line(exc)}") from None
    graph_input, shape, batch, output, classes = _signature(model, request)
    if request.get("normalization"):
        from sbengine.models.normalize import normalization_shape

        try:
            normalization_shape(shape, len(request["normalization"]["mean"]))
        except ValueError as exc:
            raise Rejected(f"{exc} for the graph's inputs {shape}", field="body.normalization") from None
    probabilities = output_kind(model, output.name)
    options = {"output": output.name, "batch": batch, "probabilities": probabilities}
    try:
        reference = OnnxRuntimeModule(path.read_bytes(), **options)
    except Exception as exc:  # onnxruntime's own refusal (a shape it cannot infer, an unknown op)
        raise Rejected(f"onnxruntime cannot load the graph: {one_line(exc)}") from None
    rows = batch or CHECK_ROWS
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((rows, *shape), generator=generator)
    try:
        expected = reference._forward(x)
    except Exception as exc:
        raise Rejected(f"onnxruntime fails on a batch of {tuple(x.shape)}: {one_line(exc)}") from None
    if tuple(expected.shape) != (rows, classes):
        raise Rejected(
            f"the graph answers a batch of {rows} with shape {tuple(expected.shape)}, "
            f"not ({rows}, {classes})",
            field="body.num_classes",
        )
    if not bool(torch.isfinite(expected.float()).all()):
        raise Rejected("the graph's output on random inputs is not finite")

    blocked, reason, module = unsupported_ops(model), None, None
    if blocked:
        reason = f"operators without a torch implementation: {listed(blocked)}"
    else:
        try:
            module = OnnxTorch(model, **options).eval()
            with torch.no_grad():
                got = module._forward(x)
            difference = _max_relative(got, expected)
            if tuple(got.shape) != tuple(expected.shape) or not difference <= RTOL:
                reason = f"the torch interpreter differs from onnxruntime by {difference:.2e} (relative)"
                module = None
        except Exception as exc:  # an attribute combination the interpreter does not implement
            reason, module = f"the torch interpreter cannot run the graph: {one_line(exc)}", None
    if module is not None:
        cost = measure_cost(module, shape, module=module, batch=batch or 1)
    else:
        cost = _graph_cost(model, shape, classes)
    shutil.copyfile(path, request["output"])
    runtime = "torch" if module is not None else "onnxruntime"
    return {
        "architecture": {
            "name": "onnx",
            "runtime": runtime,
            "output": output.name,
            "batch": batch,
            "probabilities": probabilities,
            "opset": opset_of(model),
            "producer": f"{model.producer_name} {model.producer_version}".strip()[:100],
        },
        "input_shape": list(shape),
        "num_classes": classes,
        "capabilities": {
            "gradients": module is not None,
            "runtime": runtime,
            "blocked_by": blocked,
            "reason": reason,
        },
        "cost": cost,
        "tensors": len(model.graph.initializer),
        "parameters": cost["parameters"],
        "nodes": nodes,
        "operators": ops,
        "onnxruntime": onnxruntime.__version__,
        "input_dtype": FLOAT_TYPES[graph_input.type.tensor_type.elem_type],
        "check_rows": int(np.int64(rows)),
    }
