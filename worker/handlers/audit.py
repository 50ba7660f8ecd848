"""run_audit: load the model (or build the ensemble) and the dataset, run the requested checks, keep the
verdict (with the thresholds it used, kept with the audit's parameters), and store the results, each check's
report section and every figure they support as artifacts.

The sections (sbengine.checks.base describes them) are stored on the audit row next to the results: the
service renders a report from them without importing the engine, so a new check needs no service change.

The audited network is an ``sbengine.ensemble.Ensemble`` when the model was trained with ensemble_size > 1
(its members) or when the audit names several ``model_ids`` (one member each); the ensemble check then
compares every member with the ensemble.
"""

from __future__ import annotations

import json

from worker.inputs import load_dataset, load_members
from worker.mlflow_runs import AuditRun
from worker.runner import HandlerResult, JobContext, OutputFile, jsonable

AUDIT_PARAMS = (
    "checks",
    "options",
    "split",
    "repeats",
    "seed",
    "model_ids",
    "ensemble_size",
    "combine",
    "mlflow",
)


def run_audit_job(ctx: JobContext) -> HandlerResult:
    from sbengine.audit import audit_figures, report_sections, run_audit
    from sbengine.device import resolve_device

    params = ctx.params
    model, members = _audited_network(ctx)
    dataset = load_dataset(ctx, params["dataset_id"])
    raw = run_audit(
        model,
        dataset,
        checks=list(params["checks"]),
        simple_blocks=params.get("simple_blocks"),
        split=params.get("split", "test"),
        repeats=int(params.get("repeats", 5)),
        seed=int(params.get("seed", 0)),
        device=resolve_device(ctx.settings.device),
        options=params.get("options") or None,
        members=members,
        verdict_thresholds=params.get("verdict_thresholds"),
        progress=ctx.progress,
    )
    out = jsonable(raw)
    rid = ctx.resource_id
    results_file = ctx.scratch / "results.json"
    results_file.write_text(json.dumps(out, allow_nan=False))
    files = [OutputFile("results", results_file, "application/json", f"{rid}-results.json")]
    ctx.report("figures", 0, 1)
    for name, png in audit_figures(raw, dataset).items():  # NaN (not JSON's null) plots as a gap
        path = ctx.scratch / f"{name}.png"
        path.write_bytes(png)
        files.append(OutputFile(name, path, "image/png", f"{rid}-{name}.png"))
    ctx.report("figures", 1, 1)
    audit_params = {k: params[k] for k in AUDIT_PARAMS if k in params}
    audit_params["simple_blocks"] = out.get("simple_blocks", params.get("simple_blocks"))
    audit_params["verdict_thresholds"] = out["verdict_thresholds"]  # the ones the verdict used
    audit_params["environment"] = environment(resolve_device(ctx.settings.device))
    fields = {
        "verdict": out["verdict"],
        "verdict_code": out.get("verdict_code"),
        "results": out["results"],
        "sections": report_sections(out),
        "params": audit_params,
    }
    # Set by the API when the server logs audits to MLflow: the run is logged as the result is recorded.
    target = params.get("mlflow")
    publisher = AuditRun(ctx, target, fields) if target else None
    return HandlerResult(files=files, fields=fields, publisher=publisher)


def environment(device: str) -> dict[str, str]:
    """What produced the numbers, stored with them so a report can say how to reproduce it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        sbaudit = version("sbaudit")
    except PackageNotFoundError:
        sbaudit = "unknown"
    return {
        "sbaudit": sbaudit,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }


def _audited_network(ctx: JobContext):
    """(network, members): a single model and None, or an Ensemble and its member modules."""
    from sbengine.ensemble import Ensemble

    params = ctx.params
    members = []
    num_classes = None
    for model_id in params.get("model_ids") or [params["model_id"]]:
        modules, row = load_members(ctx, model_id)
        members.extend(modules)
        num_classes = row.num_classes
    if len(members) == 1:
        return members[0], None
    return Ensemble(members, params.get("combine") or "logits", num_classes=num_classes), members
