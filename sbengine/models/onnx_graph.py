"""An ONNX graph as a model of the engine: a module from inputs to logits, like every other model.

Two ways to run one, chosen once at upload (sbengine/uploads/onnx_check.py) and stored with the model as
``architecture["runtime"]``:

- ``OnnxTorch`` (runtime ``torch``): the graph interpreted node by node with torch ops
  (sbengine/models/onnx_ops.py), so gradients flow and every check runs;
- ``OnnxRuntimeModule`` (runtime ``onnxruntime``): onnxruntime's forward pass, for graphs using operators
  the interpreter lacks (scikit-learn trees through skl2onnx, ...). ``differentiable`` is False: the checks
  that backpropagate (pgd, uap) refuse it up front, the forward-only checks run as on any module.

Both take the dataset's stored representation (the graph's own preprocessing, if any, is part of it), split
a batch into the graph's batch size when its batch dimension is fixed, and turn the chosen output into
logits: scores as they are, probabilities (an output made by ``Softmax`` or an ``ai.onnx.ml`` classifier)
as their logarithm, which has the same softmax and ranks classes alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sbengine.models.onnx_ops import DEVICE, DTYPES, SUPPORTED, run_op

# Probabilities at 0 become this log-probability (finite, so attacks and metrics stay finite).
LOG_FLOOR = math.log(1e-12)
CLASSIFIER_OPS = {"Softmax", "ZipMap", "Normalizer"}


def load_onnx(path: Path | str) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False)


def opset_of(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def unsupported_ops(model: Any) -> list[str]:
    """The operators of the graph the torch interpreter lacks (other domains, subgraphs included)."""
    missing = set()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED:
            missing.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
    return sorted(missing)


def _attributes(node: Any) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = torch.from_numpy(numpy_helper.to_array(value).copy())
        elif isinstance(value, list):
            value = list(value)
        out[attr.name] = value
    return out


def _scores(out: torch.Tensor, probabilities: bool) -> torch.Tensor:
    out = out.float()
    return torch.log(out.clamp_min(1e-12)) if probabilities else out


class _Batched(nn.Module):
    """Runs a graph whose batch dimension is ``batch`` (None: any) on batches of any size."""

    differentiable = True

    def __init__(self, batch: int | None, probabilities: bool) -> None:
        super().__init__()
        self.batch = batch
        self.probabilities = probabilities

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return _scores(self._forward(x), self.probabilities)
        outs = []
        for chunk in torch.split(x, self.batch):
            n = chunk.shape[0]
            if n < self.batch:  # the last, short chunk: pad with zeros, keep only its own rows
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))])
            outs.append(self._forward(chunk)[:n])
        return _scores(torch.cat(outs), self.probabilities)


class OnnxTorch(_Batched):
    """The graph interpreted with torch ops; floating-point initializers are frozen parameters, the others
    buffers (both move with ``.to``)."""

    def __init__(self, model: Any, *, output: str, batch: int | None, probabilities: bool) -> None:
        from onnx import numpy_helper

        super().__init__(batch, probabilities)
        missing = unsupported_ops(model)
        if missing:
            raise NotImplementedError(f"operators without a torch implementation: {', '.join(missing)}")
        graph = model.graph
        self.opset = opset_of(model)
        initializers = {init.name for init in graph.initializer}  # older exports list them as inputs too
        self.input_name = next(i.name for i in graph.input if i.name not in initializers)
        self.output = output
        self._names: dict[str, str] = {}
        stored = [
            (init.name, torch.from_numpy(numpy_helper.to_array(init).copy())) for init in graph.initializer
        ]
        self.nodes = []
        for node in graph.node:
            attributes = _attributes(node)
            if node.op_type == "Constant" and isinstance(attributes.get("value"), torch.Tensor):
                # Some exporters store weights as Constant nodes: held like initializers, they move with
                # the module and count as its parameters.
                stored.append((node.output[0], attributes["value"]))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attributes))
        for k, (name, tensor) in enumerate(stored):
            self._names[name] = f"c{k}"
            if tensor.is_floating_point():  # weights: frozen parameters (the engine sizes models by them)
                self.register_parameter(f"c{k}", nn.Parameter(tensor, requires_grad=False))
            else:
                self.register_buffer(f"c{k}", tensor, persistent=False)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = {name: getattr(self, key) for name, key in self._names.items()}
        values[self.input_name] = x
        values[""] = None
        for op, inputs, outputs, attributes in self.nodes:
            args = [values[name] for name in inputs]
            attributes = {
                k: (v.to(x.device) if isinstance(v, torch.Tensor) else v) for k, v in attributes.items()
            }
            attributes[DEVICE] = x.device  # tensors an op creates live where the input does
            result = run_op(op, args, attributes, self.opset, len(outputs))
            if isinstance(result, tuple):
                for name, value in zip(outputs, result, strict=False):
                    values[name] = value
            else:
                values[outputs[0]] = result
        return values[self.output]


class OnnxRuntimeModule(_Batched):
    """onnxruntime's forward pass; no gradients (``differentiable`` is False)."""

    differentiable = False

    def __init__(self, data: bytes, *, output: str, batch: int | None, probabilities: bool) -> None:
        import onnxruntime

        super().__init__(batch, probabilities)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = {"tensor(double)": torch.float64}.get(graph_input.type, torch.float32)
        self.output = output

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("this model runs in onnxruntime and has no gradients")
        array = x.detach().to("cpu", self.input_dtype).contiguous().numpy()
        (out,) = self.session.run([self.output], {self.input_name: array})
        return torch.as_tensor(out).to(x.device)


def output_kind(model: Any, output: str) -> bool:
    """True when ``output`` holds probabilities: made by Softmax or by an ai.onnx.ml classifier (through
    any Identity or Cast nodes after it)."""
    producers = {name: node for node in model.graph.node for name in node.output}
    seen = set()
    while output in producers and output not in seen:
        seen.add(output)
        node = producers[output]
        if node.op_type in ("Identity", "Cast") and node.domain in ("", "ai.onnx"):
            output = node.input[0]
            continue
        return node.op_type in CLASSIFIER_OPS or node.domain == "ai.onnx.ml"
    return False


def onnx_module(path: Path | str, architecture: dict[str, Any]) -> nn.Module:
    """The stored graph as the module ``architecture`` (as the upload validator recorded it) describes."""
    options = {
        "output": architecture["output"],
        "batch": architecture.get("batch"),
        "probabilities": bool(architecture.get("probabilities")),
    }
    if architecture.get("runtime") == "torch":
        module: nn.Module = OnnxTorch(load_onnx(path), **options)
    else:
        module = OnnxRuntimeModule(Path(path).read_bytes(), **options)
    return module.eval()


__all__ = ["DTYPES", "OnnxRuntimeModule", "OnnxTorch", "load_onnx", "onnx_module", "unsupported_ops"]
