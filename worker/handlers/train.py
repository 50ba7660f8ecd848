"""train_model: build the architecture, train it (or an ensemble of it), save weights, history and curves.

A single model trains with checkpoints, so a re-queued job resumes where the lost attempt stopped. An
ensemble (``ensemble_size`` > 1) trains with ``sbengine.ensemble.train_ensemble``: its members together in
one vectorized pass when the architecture allows it, else one after another; member i uses seed
``member_seeds(seed, size)[i]``. Ensembles are not checkpointed: a re-queued ensemble job starts over.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from worker.inputs import load_dataset, weights_kind
from worker.runner import HandlerResult, JobContext, OutputFile, jsonable

PNG = "image/png"


def train_model(ctx: JobContext) -> HandlerResult:
    from sbengine.device import resolve_device
    from sbengine.train import TrainConfig

    params = ctx.params
    dataset = load_dataset(ctx, params["dataset_id"])
    size = int(params.get("ensemble_size", 1))
    config = TrainConfig.from_dict(params["training"])
    device = resolve_device(ctx.settings.device)
    if size == 1:
        modules, result, history = _train_single(ctx, dataset, config, device)
        curves_title = "Training"
    else:
        modules, result, history = _train_ensemble(ctx, dataset, config, device, size)
        curves_title = f"Training (mean of {size} members)"
    rid = ctx.resource_id
    files = [_save_weights(ctx, module, i, size) for i, module in enumerate(modules)]
    history_file = ctx.scratch / "history.json"
    history_file.write_text(json.dumps(jsonable(history), allow_nan=False))
    files.append(OutputFile("history", history_file, "application/json", f"{rid}-history.json"))
    files.append(_curves(ctx, history if size == 1 else mean_history(history), curves_title))
    if "cost" in params:  # torchvision/timm: the figures it was budgeted on, for its audits' budgets
        result["cost"] = params["cost"]
    return HandlerResult(
        files=files,
        fields={
            "result": result,
            "input_shape": list(dataset.input_shape),
            "num_classes": int(dataset.num_classes),
        },
    )


def _train_single(ctx: JobContext, dataset, config, device: str):
    from sbengine.device import seed_everything
    from sbengine.models import build_model
    from sbengine.train import train

    seed = int(ctx.params["seed"])
    seed_everything(seed)
    model = build_model(
        ctx.params["architecture"], input_shape=dataset.input_shape, num_classes=dataset.num_classes
    )
    result = train(
        model,
        dataset,
        config,
        seed=seed,
        device=device,
        progress=ctx.progress,
        checkpoint_path=ctx.checkpoint_path,
        checkpoint_every=ctx.settings.checkpoint_every_updates,
    ).to_dict()
    return [model], result, result.pop("history")


def _train_ensemble(ctx: JobContext, dataset, config, device: str, size: int):
    """Members, the ensemble's result (metrics of the logit average; each member's own under ``members``)
    and the members' histories (one list per member)."""
    from sbengine.ensemble import Ensemble, member_seeds, train_ensemble

    seed = int(ctx.params["seed"])
    started = time.perf_counter()
    members, results = train_ensemble(
        ctx.params["architecture"],
        dataset,
        config,
        size=size,
        seed=seed,
        device=device,
        progress=ctx.progress,
    )
    seconds = time.perf_counter() - started
    ctx.report("evaluate", 0, 1)
    rows = []
    for member_seed, result in zip(member_seeds(seed, size), results, strict=True):
        row = result.to_dict()
        row.pop("history")
        rows.append({"seed": member_seed, **row})
    stops = {r["stopped_because"] for r in rows}
    ensemble = Ensemble(members, "logits", num_classes=int(dataset.num_classes))
    result = {
        "updates": max(r["updates"] for r in rows),
        "epochs": max(r["epochs"] for r in rows),
        "seconds": round(seconds, 3),
        "stopped_because": stops.pop() if len(stops) == 1 else "mixed",
        "selected_step": max(r["selected_step"] for r in rows),
        "metrics": _metrics(ensemble, dataset, device),
        "ensemble_size": size,
        "combine": "logits",
        "members": rows,
    }
    ctx.report("evaluate", 1, 1)
    return members, result, [r.history for r in results]


def _metrics(model, dataset, device: str) -> dict[str, float]:
    import torch

    from sbengine.evaluation import accuracy_and_loss, predict_logits

    out = {}
    model.to(device).eval()
    for name, (x, y) in dataset.splits.items():
        logits = predict_logits(model, x, device=device)
        out[f"{name}_accuracy"], out[f"{name}_loss"] = accuracy_and_loss(logits, torch.from_numpy(y))
    return out


def mean_history(histories: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One history row per evaluation step, each number the mean over the members evaluated at that step
    (members that stopped early drop out of the later rows)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for history in histories:
        for row in history:
            by_step.setdefault(row["step"], []).append(row)
    out = []
    for step in sorted(by_step):
        rows = by_step[step]
        mean: dict[str, Any] = {"step": step}
        for key in {k for row in rows for k in row} - {"step"}:
            values = [row[key] for row in rows if isinstance(row.get(key), int | float)]
            values = [v for v in values if math.isfinite(v)]
            if values:
                mean[key] = sum(values) / len(values)
        out.append(mean)
    return out


def _save_weights(ctx: JobContext, module, member: int, size: int) -> OutputFile:
    from safetensors.torch import save_file

    kind = weights_kind(member, size)
    path = ctx.scratch / f"{kind}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))
    name = ctx.resource_id if size == 1 else f"{ctx.resource_id}-member{member}"
    return OutputFile(kind, path, "application/octet-stream", f"{name}.safetensors")


def _curves(ctx: JobContext, history: list[dict[str, Any]], title: str) -> OutputFile:
    """Accuracy over updates (train, validation; robust and randomized accuracy with adversarial training)."""
    from sbengine.plots import training_curves

    path = ctx.scratch / "training_curves.png"
    path.write_bytes(training_curves(history, title=title))
    return OutputFile("training_curves", path, PNG, f"{ctx.resource_id}-training_curves.png")
