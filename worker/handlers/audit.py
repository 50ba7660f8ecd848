"""run_audit: load the trained model and the dataset, run the requested checks, keep the verdict."""

from __future__ import annotations

import json

from worker.inputs import load_dataset, load_model
from worker.runner import HandlerResult, JobContext, OutputFile, jsonable


def run_audit_job(ctx: JobContext) -> HandlerResult:
    from sbengine.audit import run_audit
    from sbengine.device import resolve_device

    params = ctx.params
    model, _ = load_model(ctx, params["model_id"])
    dataset = load_dataset(ctx, params["dataset_id"])
    out = run_audit(
        model,
        dataset,
        checks=list(params["checks"]),
        simple_blocks=params.get("simple_blocks"),
        split=params.get("split", "test"),
        repeats=int(params.get("repeats", 5)),
        seed=int(params.get("seed", 0)),
        device=resolve_device(ctx.settings.device),
        progress=ctx.progress,
    )
    results_file = ctx.scratch / "results.json"
    results_file.write_text(json.dumps(jsonable(out), allow_nan=False))
    audit_params = {k: params[k] for k in ("checks", "split", "repeats", "seed") if k in params}
    audit_params["simple_blocks"] = out.get("simple_blocks", params.get("simple_blocks"))
    return HandlerResult(
        files=[OutputFile("results", results_file, "application/json", f"{ctx.resource_id}-results.json")],
        fields={
            "verdict": out["verdict"],
            "verdict_code": out.get("verdict_code"),
            "results": out["results"],
            "params": audit_params,
        },
    )
