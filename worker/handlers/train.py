"""train_model: build the architecture, train with checkpoints (a re-queued job resumes), save weights."""

from __future__ import annotations

import json

from worker.inputs import load_dataset
from worker.runner import HandlerResult, JobContext, OutputFile, jsonable


def train_model(ctx: JobContext) -> HandlerResult:
    from safetensors.torch import save_file

    from sbengine.device import resolve_device, seed_everything
    from sbengine.models import build_model
    from sbengine.train import TrainConfig, train

    params = ctx.params
    dataset = load_dataset(ctx, params["dataset_id"])
    seed = int(params["seed"])
    seed_everything(seed)
    model = build_model(
        params["architecture"], input_shape=dataset.input_shape, num_classes=dataset.num_classes
    )
    config = TrainConfig.from_dict(params["training"])
    result = train(
        model,
        dataset,
        config,
        seed=seed,
        device=resolve_device(ctx.settings.device),
        progress=ctx.progress,
        checkpoint_path=ctx.checkpoint_path,
        checkpoint_every=ctx.settings.checkpoint_every_updates,
    ).to_dict()
    weights = ctx.scratch / "weights.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    history = ctx.scratch / "history.json"
    history.write_text(json.dumps(jsonable(result.pop("history")), allow_nan=False))
    rid = ctx.resource_id
    return HandlerResult(
        files=[
            OutputFile("weights", weights, "application/octet-stream", f"{rid}.safetensors"),
            OutputFile("history", history, "application/json", f"{rid}-history.json"),
        ],
        fields={
            "result": result,
            "input_shape": list(dataset.input_shape),
            "num_classes": int(dataset.num_classes),
        },
    )
