"""The UAP check (docs/method.md §8): one universal adversarial perturbation fitted on ``fit_split`` and
evaluated on the audited split, and where its budget lies (sbengine.uap.uap_audit, whose docstring explains
the two methods and the label-signed application)."""

from __future__ import annotations

from typing import Any

from sbengine.checks.base import DASH, Check, CheckContext, figure, num, section, share_rows, table
from sbengine.data.dataset import Dataset
from sbengine.plots import block_bounds, block_shares, perturbation_heatmap
from sbengine.uap import uap_audit

OPTIONS = {
    "method": "sgd",
    "norm": "l2",
    "eps": 1.0,
    "label_signed": True,
    "step_size": 0.05,
    "steps": 30,
    "epochs": 2,
    "fit_split": "val",
}


def run(ctx: CheckContext) -> dict[str, Any]:
    o = dict(ctx.options)
    return uap_audit(
        ctx.model,
        ctx.dataset,
        method=o.pop("method"),
        norm=o.pop("norm"),
        eps=o.pop("eps"),
        label_signed=o.pop("label_signed"),
        fit_split=o.pop("fit_split"),
        eval_split=ctx.split,
        simple_blocks=ctx.simple_blocks,
        progress=ctx.progress,
        seed=ctx.seed,
        device=ctx.device,
        **o,
    )


def _unit_max(v: list[float]) -> list[float]:
    m = max(abs(x) for x in v) or 1.0
    return [x / m for x in v]


def figures(result: dict[str, Any], dataset: Dataset) -> dict[str, bytes]:
    out = {}
    if result.get("uap"):
        out["uap_vector"] = perturbation_heatmap(
            [_unit_max(result["uap"])],
            block_bounds=block_bounds(dataset),
            title="Universal perturbation (canonical coordinates)",
        )
    out["uap_block_share"] = block_shares(result["block_share"], title="Share of the UAP per block")
    return out


VECTOR = figure(
    "uap_vector",
    "Universal adversarial perturbation",
    "The one perturbation added to every example, in canonical coordinates, scaled to its largest entry. "
    "A UAP that lives on S alone shows that one direction in S flips most predictions.",
)
BLOCK_SHARE = figure(
    "uap_block_share",
    "Share of the UAP per block",
    "Share of the universal perturbation's ℓ2 norm on each block. Under simplicity bias nearly all of "
    "it lies on S.",
)


def report_section(u: dict[str, Any]) -> dict[str, Any]:
    norm = u.get("uap_norm") or {}
    rows = [
        ["clean accuracy", num(u.get("clean_accuracy"))],
        ["accuracy under the UAP", num(u.get("accuracy"))],
        ["accuracy under the UAP on the fit split", num(u.get("fit_accuracy"))],
        ["fooling rate", num(u.get("fooling_rate"))],
        ["ℓ2 / ℓ∞ norm", f"{num(norm.get('l2'))} / {num(norm.get('linf'))}"],
        ["share on S", num(u.get("simple_share"))],
    ]
    summary = (
        f"{u.get('method', DASH)} method, {u.get('norm', DASH)} budget {num(u.get('eps'))}, fitted on "
        f"{u.get('fit_split', DASH)}, evaluated on {u.get('eval_split', DASH)}."
    )
    tables = [
        table("", ["", "value"], rows),
        table("Share of the UAP per block", ["block", "share"], share_rows(u.get("block_share") or {})),
    ]
    shown = ([VECTOR] if u.get("uap") else []) + [BLOCK_SHARE]
    return section("uap", "Universal adversarial perturbation", summary, tables=tables, figures=shown)


CHECK = Check(
    name="uap",
    run=run,
    report_section=report_section,
    figures=figures,
    options=OPTIONS,
    needs_gradients=True,
    needs_fixed_blocks=True,
)
