"""generate_dataset: sbengine.data.build_dataset, saved as arrays.npz + dataset.json artifacts."""

from __future__ import annotations

from typing import Any

from worker.runner import HandlerResult, JobContext, JobError, OutputFile


def bayes_summary(description: dict[str, Any]) -> dict[str, Any]:
    """Bayes accuracy per block, and of S, S^c and all blocks together (synthetic data: exact)."""
    per_block = [b.get("bayes_accuracy") for b in description.get("blocks", [])]
    summary: dict[str, Any] = {"blocks": per_block, "simple": None, "complex": None, "all": None}
    spec = description.get("spec") or {}
    if spec.get("kind") != "synthetic":
        return summary
    from sbengine.data.synthetic import BlockSpec, bayes_accuracy

    blocks = [BlockSpec.from_dict(b) for b in spec["blocks"]]
    simple = set(description.get("simple_blocks") or [])
    summary["simple"] = bayes_accuracy([b for i, b in enumerate(blocks) if i in simple])
    rest = [b for i, b in enumerate(blocks) if i not in simple]
    summary["complex"] = bayes_accuracy(rest) if rest else None
    summary["all"] = bayes_accuracy(blocks)
    return summary


def generate_dataset(ctx: JobContext) -> HandlerResult:
    from sbengine.data import build_dataset
    from sbengine.data.images import RawDataMissing

    raw = ctx.settings.raw_data_dir or (ctx.settings.data_dir / "raw")
    ctx.report("generate", 0, 2)
    try:
        dataset = build_dataset(
            ctx.params["request"], raw_data_dir=str(raw), download=ctx.settings.download_raw_data
        )
    except RawDataMissing as exc:  # the API checks first; this is the files vanishing or a failed download
        raise JobError(exc.public) from None
    ctx.report("save", 1, 2)
    out = ctx.scratch / "dataset"
    dataset.save(out)
    description = dataset.describe()
    description["bayes_accuracy"] = bayes_summary(description)
    ctx.report("save", 2, 2)
    rid = ctx.resource_id
    return HandlerResult(
        files=[
            OutputFile("arrays", out / "arrays.npz", "application/octet-stream", f"{rid}-arrays.npz"),
            OutputFile("description", out / "dataset.json", "application/json", f"{rid}.json"),
        ],
        fields={"description": description},
    )
