"""The PGD check (docs/method.md §7.1, §8): instance-wise PGD on every point of the audited split, the
accuracy under attack, and the share of each perturbation on every block (sbengine.attacks.pgd_audit).

``eps`` and ``step_size`` are fractions of the data range when ``relative`` is true, as nb06's "0.5·drange",
so one default fits data of any scale.
"""

from __future__ import annotations

from typing import Any

from sbengine.attacks import PGDConfig, data_bounds, pgd_audit, relative_to_range
from sbengine.checks.base import DASH, Check, CheckContext, figure, mean_std, num, section, share_rows, table
from sbengine.data.dataset import Dataset
from sbengine.plots import block_bounds, block_shares, perturbation_heatmap

OPTIONS = {
    "norm": "l2",
    "eps": 0.5,
    "step_size": 0.05,
    "steps": 20,
    "relative": True,
    "restarts": 1,
    "loss": "untargeted",
    "rand_eps": 0.0,
}


def pgd_config(dataset: Dataset, o: dict[str, Any]) -> PGDConfig:
    """The attack the options describe on this dataset: relative budgets scaled to its range, perturbed
    inputs clipped to its bounds (not for synthetic or rotated data, whose coordinates are unbounded)."""
    o = dict(o)
    relative = o.pop("relative")
    if not isinstance(relative, bool):
        raise ValueError("options.pgd.relative must be true or false")
    scale = relative_to_range(dataset, 1.0) if relative else 1.0
    if not all(isinstance(o[k], int | float) and not isinstance(o[k], bool) for k in ("eps", "step_size")):
        raise ValueError("options.pgd.eps and options.pgd.step_size must be numbers")
    bounds = (
        data_bounds(dataset) if dataset.rotation is None and dataset.spec.get("kind") != "synthetic" else None
    )
    return PGDConfig.from_dict(
        {**o, "eps": o["eps"] * scale, "step_size": o["step_size"] * scale, "bounds": bounds}
    )


def run(ctx: CheckContext) -> dict[str, Any]:
    return pgd_audit(
        ctx.model,
        ctx.dataset,
        pgd_config(ctx.dataset, ctx.options),
        split=ctx.split,
        simple_blocks=ctx.simple_blocks,
        progress=ctx.progress,
        seed=ctx.seed,
        device=ctx.device,
    )


def figures(result: dict[str, Any], dataset: Dataset) -> dict[str, bytes]:
    out = {}
    if result.get("heatmap"):
        out["pgd_heatmap"] = perturbation_heatmap(
            result["heatmap"],
            block_bounds=block_bounds(dataset),
            title="PGD perturbations (canonical coordinates)",
        )
    out["pgd_block_share"] = block_shares(
        result["block_share"], title="Share of the PGD perturbation per block"
    )
    return out


HEATMAP = figure(
    "pgd_heatmap",
    "PGD perturbations in canonical coordinates",
    "One row per example: its PGD perturbation, scaled to its largest entry (red positive, blue "
    "negative); vertical lines separate blocks. A simplicity-biased model is attacked through S: the "
    "mass sits in S's columns.",
)
BLOCK_SHARE = figure(
    "pgd_block_share",
    "Share of the PGD perturbation per block",
    "Mean share of the perturbation's ℓ2 norm on each block. Mass concentrated on S says the cheapest "
    "way to flip the model goes through the simple features.",
)


def report_section(p: dict[str, Any]) -> dict[str, Any]:
    config = p.get("config") or {}
    rows = [
        ["clean accuracy", num(p.get("clean_accuracy"))],
        ["accuracy under attack", num(p.get("accuracy"))],
        ["mean ℓ2 norm of the perturbation", num(p.get("mean_l2_norm"))],
        ["mean ℓ∞ norm of the perturbation", num(p.get("mean_linf_norm"))],
        ["share on S", mean_std({"mean": p.get("simple_share"), "std": p.get("simple_share_std")})],
    ]
    summary = (
        f"{config.get('norm', DASH)} PGD, eps {num(config.get('eps'))}, {num(config.get('steps'))} steps, "
        f"{num(config.get('restarts'))} restart(s), loss {config.get('loss', DASH)}; "
        f"split {p.get('split', DASH)}, {num(p.get('n'))} examples."
    )
    tables = [
        table("", ["", "value"], rows),
        table(
            "Share of the perturbation per block", ["block", "share"], share_rows(p.get("block_share") or {})
        ),
    ]
    shown = ([HEATMAP] if p.get("heatmap") else []) + [BLOCK_SHARE]
    return section("pgd", "Instance-wise PGD", summary, tables=tables, figures=shown)


CHECK = Check(
    name="pgd",
    run=run,
    report_section=report_section,
    figures=figures,
    options=OPTIONS,
    needs_gradients=True,
    needs_fixed_blocks=True,
)
