"""The estimate (service/budget.py) of each job kind, from its request and what is stored about its inputs.

Each mirrors what the engine does today, as an upper estimate:

- generate_dataset (sbengine/data/synthetic.py): the float32 rows, the float64 canonical coordinates kept
  for an exact rotation, the rotation and its factorisations, a bounded chunk, the labels and the temporaries
  of drawing one column; MNIST-CIFAR (sbengine/data/mnist_cifar.py) from its image size and the raw files.
- train_model (sbengine/train.py, ensemble_train.py): the dataset, then per member the weights, gradients,
  optimizer state and one more copy (best-on-validation snapshot or checkpoint), and a batch's activations
  (kept for the backward pass). Work: 3 forward passes' worth per example and update (forward and backward),
  PGD steps with adversarial training, and the evaluations.
- run_audit (sbengine/checks/): the dataset and the models, and the largest temporary of any check:
  whole-split copies while randomizing in canonical coordinates (float64 while rotating), PGD perturbations,
  the UAP's SVD. Randomization always runs (the verdict reads it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from service.budget import RUNTIME_BYTES, Estimate, Part
from service.model_cost import VISION, NetworkCost, network_cost
from service.models import Model
from service.schemas.audits import (
    AuditCreate,
    CheckOptions,
    FeatureDependenceOptions,
    PGDOptions,
    UAPOptions,
)
from service.schemas.datasets import IMAGE_PRESETS, PRESET_FEATURES, DatasetCreate
from service.schemas.models import ModelCreate, PGDAttack
from service.settings import Settings

F32, F64, I64 = 4, 8, 8
# sbengine/data/synthetic.py: ROTATION_CHUNK_BYTES, and the float64 temporaries of drawing one column.
CHUNK_BYTES = 32 << 20
COLUMN_TEMPORARIES = 9
# Measured beyond the arrays: BLAS's working buffers once matrices are multiplied or factorised (about
# 20 MiB with two threads), and allocator and library pages (a few MiB).
BLAS_WORKSPACE, SLACK = 64 << 20, 16 << 20
# Random rotation: the Gaussian matrix, its SVD's and QR's working copies, Q; and ~10 d^3 operations.
ROTATION_MATRICES, ROTATION_OPS = 4, 10
# MNIST-CIFAR: 3x64x32 float32 images; CIFAR-10 has 5000 training and 1000 test images per class, which
# bounds the pairs of every variant; the raw MNIST and CIFAR-10 training files are held while composing.
IMAGE_FEATURES = 3 * 64 * 32
IMAGE_TRAIN_PAIRS, IMAGE_TEST_PAIRS, IMAGE_VAL_DEFAULT = 10_000, 2_000, 1_000
RAW_IMAGE_BYTES = 60_000 * (28 * 28 + I64) + 50_000 * (3 * 32 * 32 + I64)
# sbengine.evaluation.eval_batch_size: rows per inference batch; sbengine.uap's SGD batch; the SVD method's
# PGD.
EVAL_ROWS_VECTOR, EVAL_ROWS_IMAGE, UAP_BATCH, UAP_SVD_STEPS = 2048, 256, 256, 30


def _row_fields(body: DatasetCreate) -> tuple[str, ...]:
    source = "body.blocks" if body.blocks is not None else "body.preset"
    return ("body.n_train", "body.n_val", "body.n_test", source)


def requested_sizes(body: DatasetCreate) -> dict[str, int]:
    """Rows per split a dataset request will generate, the sizes it leaves out at their defaults (image
    presets: MNIST-CIFAR's pairs, the validation rows taken from the training ones)."""
    if body.preset in IMAGE_PRESETS:
        n_val = body.n_val if body.n_val is not None else IMAGE_VAL_DEFAULT
        return {
            "train": body.n_train if body.n_train is not None else max(0, IMAGE_TRAIN_PAIRS - n_val),
            "val": n_val,
            "test": body.n_test if body.n_test is not None else IMAGE_TEST_PAIRS,
        }
    defaults = body.default_sizes()
    given = {"train": body.n_train, "val": body.n_val, "test": body.n_test}
    return {split: n if n is not None else defaults[f"n_{split}"] for split, n in given.items()}


def dataset_estimate(body: DatasetCreate) -> Estimate:
    """generate_dataset from its request (sizes the request leaves out at their defaults)."""
    if body.preset in IMAGE_PRESETS:
        return _image_estimate(body)
    n = sum(requested_sizes(body).values())
    d = sum(b.count for b in body.blocks) if body.blocks is not None else PRESET_FEATURES[body.preset or ""]
    rotate = body.rotate is not False
    rows = _row_fields(body)
    memory = [Part("job process", RUNTIME_BYTES), Part("rows (float32)", n * d * F32, rows)]
    work = [Part("drawing", n * d * (1 + COLUMN_TEMPORARIES), rows)]
    if rotate:
        memory += [
            Part("canonical coordinates (float64)", n * d * F64, (*rows, "body.rotate")),
            Part("rotation", ROTATION_MATRICES * d * d * F64, (rows[-1], "body.rotate")),
            Part("rotation chunk", min(CHUNK_BYTES, n * d * F64)),
            Part("matrix product workspace", BLAS_WORKSPACE),
        ]
        work += [
            Part("rotating", n * d * d, (*rows, "body.rotate")),
            Part("rotation matrix", ROTATION_OPS * d**3, (rows[-1], "body.rotate")),
        ]
    else:
        memory.append(Part("column block", min(CHUNK_BYTES, n * d * F64)))
    memory.append(Part("labels and column temporaries", n * I64 * (1 + COLUMN_TEMPORARIES) + SLACK, rows[:3]))
    return Estimate("this dataset", f"{n} rows × {d} features, float32", memory, work)


def _image_estimate(body: DatasetCreate) -> Estimate:
    sizes = requested_sizes(body)
    n, largest = sum(sizes.values()), max(sizes.values())
    rows = _row_fields(body)
    memory = [
        Part("job process", RUNTIME_BYTES),
        Part("images (float32)", n * (IMAGE_FEATURES * F32 + I64), rows),
        Part("MNIST and CIFAR-10 files", RAW_IMAGE_BYTES),
        Part("composing temporaries", largest * (2 * 3 * 32 * 32 + 28 * 28) * F32, rows[:3]),
    ]
    work = [Part("composing", n * IMAGE_FEATURES, rows)]
    return Estimate("this dataset", f"{n} images × {IMAGE_FEATURES} features, float32", memory, work)


# --- what is stored about a dataset and a model -------------------------------------------------------


def _features(description: dict[str, Any]) -> int:
    return max(1, math.prod(int(n) for n in description.get("input_shape") or [1]))


def _sizes(description: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in (description.get("sizes") or {}).items()}


def dataset_bytes(description: dict[str, Any]) -> int:
    """A stored dataset loaded into a job: every split's float32 rows and int64 labels, and its rotation.
    An uploaded image archive with per-example regions adds its boolean masks (one byte per pixel) and the
    boolean (rows, features) selection a region block is randomized through (sbengine Dataset.selection)."""
    d = _features(description)
    rotation = d * d * F64 if description.get("rotated") else 0
    n = sum(_sizes(description).values())
    regions = 0
    if description.get("masks"):
        shape = [int(v) for v in description.get("input_shape") or [1]]
        regions = n * (math.prod(shape[1:]) + d)
    return n * (d * F32 + I64) + rotation + regions


def _eval_rows(d: int) -> int:
    return EVAL_ROWS_VECTOR if d <= 4096 else EVAL_ROWS_IMAGE


def _architecture_fields(architecture: dict[str, Any]) -> tuple[str, ...]:
    options = {
        "fcn": ("width", "depth"),
        "cnn1d": ("filters", "kernel", "layers"),
        "gru": ("hidden", "layers"),
        "lstm": ("hidden", "layers"),
        "torchvision": ("model",),
        "timm": ("model",),
    }.get(architecture.get("name", ""), ("name",))
    return tuple(f"body.architecture.{o}" for o in options)


def _optimizer_copies(training: dict[str, Any]) -> int:
    """Weight-sized tensors the optimizer keeps: momentum / Adam's two moments / RMSprop's square average."""
    momentum = 1 if training.get("momentum", 0) > 0 else 0
    return {"sgd": momentum, "adam": 2, "rmsprop": 1 + momentum}.get(training.get("optimizer", "sgd"), 2)


# --- train_model --------------------------------------------------------------------------------------


def training_estimate(
    body: ModelCreate, description: dict[str, Any], settings: Settings, measured: NetworkCost | None = None
) -> Estimate:
    """train_model for ``body`` on the stored dataset ``description``. ``measured``: one network's cost as
    the engine measured it (service/measured_cost.py), for an architecture without a formula here."""
    arch = body.architecture.model_dump(mode="json")
    training = body.training.model_dump(mode="json")
    d, sizes = _features(description), _sizes(description)
    cost = measured or network_cost(
        arch, list(description.get("input_shape") or [d]), int(description.get("num_classes") or 2)
    )
    members, batch, stop = body.ensemble_size, body.training.batch_size, body.training.stop
    n_train, n_val = sizes.get("train", 0), sizes.get("val", 0)
    updates = min(stop.max_updates, settings.max_updates)
    if stop.max_epochs is not None:
        updates = min(updates, stop.max_epochs * math.ceil(max(n_train, 1) / batch))
    net = _architecture_fields(arch) + (("body.ensemble_size",) if members > 1 else ())
    stop_field = (
        "body.training.stop.max_updates" if stop.max_epochs is None else "body.training.stop.max_epochs"
    )
    optimizer_copies = _optimizer_copies(training)
    # weights, gradients, a snapshot or checkpoint; a vectorized ensemble also stacks its members' weights
    copies = 3 + optimizer_copies + (members > 1)
    optimizer = ("body.training.optimizer",) if optimizer_copies else ()
    activations = max(2 * batch, _eval_rows(d)) * cost.activations * F32 * members
    memory = [
        Part("job process", RUNTIME_BYTES),
        Part("dataset", dataset_bytes(description), ("body.dataset_id",)),
        Part(
            "weights, gradients, optimizer state",
            (cost.parameters * copies + cost.buffers) * F32 * members,
            (*net, *optimizer),
        ),
        Part("activations", activations, (*net, "body.training.batch_size")),
    ]
    evaluations = updates // body.training.eval_every + 2
    step_fields = (*net, stop_field, "body.training.batch_size")
    work = [
        Part("updates", 3 * updates * batch * cost.macs * members, step_fields),
        Part("evaluations", evaluations * (n_train + n_val) * cost.macs * members,
             (*net, "body.training.eval_every", "body.dataset_id")),
        Part("final metrics", sum(sizes.values()) * cost.macs * members, (*net, "body.dataset_id")),
    ]  # fmt: skip
    adversarial = body.training.adversarial
    if adversarial is not None:
        attack, check = adversarial.attack, adversarial.eval_attack or adversarial.attack
        attacked_rows = min(adversarial.eval_examples, n_val)
        adv = "body.training.adversarial"
        work += [
            Part("adversarial attack", updates * _pgd_passes(attack) * batch * cost.macs * members,
                 (*step_fields, f"{adv}.attack.steps", f"{adv}.attack.restarts")),
            Part("adversarial evaluation", evaluations * attacked_rows * (_pgd_passes(check) + 3) * cost.macs,
                 (*net, f"{adv}.eval_examples", "body.training.eval_every")),
        ]  # fmt: skip
    ensemble = f" × {members} members" if members > 1 else ""
    named = f"{arch['name']} {arch['model']}" if "model" in arch else arch["name"]
    shape = (
        f"{named} of {cost.parameters:,} parameters{ensemble} on {n_train} rows × {d} features, "
        f"batch {batch}, up to {updates} updates"
    )
    return Estimate("this training job", shape, memory, work)


def _pgd_passes(attack: PGDAttack | PGDOptions) -> int:
    """Forward-pass equivalents per attacked example: a forward and a backward pass per step and restart."""
    return 3 * attack.steps * attack.restarts


# --- run_audit ----------------------------------------------------------------------------------------


_FORMULAS = ("fcn", "cnn1d", "gru", "lstm", *VISION)


def model_cost(row: Model) -> NetworkCost:
    """One member of a stored model. A model the service has no formula for (torchvision, timm, ONNX) was
    measured by the upload validator (sbengine/models/cost.py), when uploaded or when its training was
    submitted, and keeps its figures in ``result.cost``; an uploaded model's stored parameter count wins over
    the formula."""
    measured = (row.result or {}).get("cost")
    if isinstance(measured, dict) and (row.architecture or {}).get("name") not in _FORMULAS:
        return NetworkCost(
            int(measured["parameters"]),
            int(measured["buffers"]),
            int(measured["macs"]),
            int(measured["activations"]),
        )
    cost = network_cost(row.architecture or {}, list(row.input_shape or [1]), int(row.num_classes or 2))
    stored = (row.result or {}).get("parameters")
    if isinstance(stored, int) and stored > cost.parameters:
        return NetworkCost(stored, cost.buffers, cost.macs, cost.activations)
    return cost


@dataclass(frozen=True)
class _Audited:
    """What every check's cost depends on: ``n`` rows of ``d`` features in the audited split, the
    multiply-adds of one forward pass of every member together (``forward``) and of the round trip to
    canonical coordinates (``canonical``, rotated data only), the bytes per value of the split that
    randomizing in canonical coordinates holds (``copies``), the dataset's blocks, and the fields naming the
    rows and the models."""

    n: int
    d: int
    sizes: dict[str, int]
    blocks: int
    forward: int
    canonical: int
    copies: int
    fields: tuple[str, ...]


def audit_estimate(body: AuditCreate, members: list[NetworkCost], description: dict[str, Any]) -> Estimate:
    """run_audit of ``body`` on the ensemble (or single model) ``members`` and the stored dataset."""
    d, sizes = _features(description), _sizes(description)
    rotated = bool(description.get("rotated"))
    model_fields = ("body.model_ids",) if body.model_ids is not None else ("body.model_id",)
    a = _Audited(
        n=sizes.get(body.split, 0),
        d=d,
        sizes=sizes,
        blocks=len(description.get("blocks") or []),
        forward=sum(m.macs for m in members),
        canonical=2 * d * d if rotated else 0,
        # a permuted copy of the split and a gathered one; while rotated, float64 round trips as well
        copies=24 if rotated else 8,
        fields=("body.split", "body.dataset_id", *model_fields),
    )
    options = body.requested_options()
    # Randomization always runs: the verdict reads it.
    costs = {name: _check_cost(name, options.get(name), a, body) for name in ("randomization", *body.checks)}
    largest = max(costs, key=lambda name: costs[name][0])
    grad = 2 if {"pgd", "uap"} & set(body.checks) else 1
    memory = [
        Part("job process", RUNTIME_BYTES),
        Part("dataset", dataset_bytes(description), ("body.dataset_id",)),
        Part("models", 2 * sum(m.parameters + m.buffers for m in members) * F32, model_fields),
        Part(f"{largest} temporaries", costs[largest][0], costs[largest][1].fields),
        Part("activations", _eval_rows(d) * sum(m.activations for m in members) * F32 * grad, model_fields),
    ]
    ensemble = f", {len(members)} members" if len(members) > 1 else ""
    shape = f"{', '.join(body.checks)} on {a.n} rows × {d} features{ensemble}"
    return Estimate("this audit", shape, memory, [work for _, work in costs.values()])


def _check_cost(name: str, o: CheckOptions | None, a: _Audited, body: AuditCreate) -> tuple[int, Part]:
    """(bytes of the check's largest temporary, its work) for check ``name`` with options ``o``."""
    randomized = (1 + 2 * body.repeats) * a.n * (a.forward + a.canonical)
    repeats = ("body.repeats", *a.fields)
    if isinstance(o, FeatureDependenceOptions):
        kept = max(2, round(o.sample_fraction * a.n))
        groups = a.blocks + (a.d if a.d <= 512 else 0)  # sbengine.metrics.default_groups
        prefix = "body.options.feature_dependence"
        work = len(o.methods) * groups * kept * (a.forward + a.canonical)
        return (a.copies + 4) * kept * a.d, Part(
            name, work, (f"{prefix}.methods", f"{prefix}.sample_fraction", *a.fields)
        )
    if isinstance(o, PGDOptions):
        work = a.n * ((_pgd_passes(o) + 2) * a.forward + a.canonical)
        fields = ("body.options.pgd.steps", "body.options.pgd.restarts", *a.fields)
        return (a.copies + 8) * a.n * a.d, Part(name, work, fields)
    if isinstance(o, UAPOptions):
        return _uap_cost(o, a)
    if name == "ensemble":  # randomization of every member, then of the ensemble
        return a.copies * a.n * a.d, Part(name, 2 * randomized, repeats)
    if name == "generalization":
        return 0, Part(name, a.n * a.forward, a.fields)
    return a.copies * a.n * a.d, Part(name, randomized, repeats)


def _uap_cost(o: UAPOptions, a: _Audited) -> tuple[int, Part]:
    fit = a.sizes.get(o.fit_split, 0)
    evaluations = (3 * fit + 2 * a.n) * a.forward
    fields = ("body.options.uap.method", "body.options.uap.fit_split", *a.fields)
    if o.method == "svd":  # PGD on every fit row, then the SVD of the perturbations (float64, thin)
        work = fit * (3 * UAP_SVD_STEPS + 1) * a.forward + 4 * fit * a.d * min(fit, a.d) + evaluations
        return 44 * fit * a.d, Part("uap", work, fields)
    work = o.epochs * fit * o.steps * 3 * a.forward + evaluations
    fields = ("body.options.uap.epochs", "body.options.uap.steps", *fields)
    return 8 * max(fit, a.n) * a.d + UAP_BATCH * a.d * F32, Part("uap", work, fields)
