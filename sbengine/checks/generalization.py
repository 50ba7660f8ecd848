"""The generalization check (docs/method.md §9): the model's accuracy against the Bayes accuracy of S alone,
of S^c alone and of all blocks (known analytically for synthetic blocks; sbengine.generalization)."""

from __future__ import annotations

from typing import Any

from sbengine.checks.base import Check, CheckContext, num, section, table
from sbengine.generalization import generalization_check


def run(ctx: CheckContext) -> dict[str, Any]:
    return generalization_check(
        ctx.model, ctx.dataset, simple_blocks=ctx.simple_blocks, split=ctx.split, device=ctx.device
    )


def report_section(g: dict[str, Any]) -> dict[str, Any]:
    rows = [
        ["accuracy", num(g.get("accuracy"))],
        ["Bayes accuracy of S alone", num(g.get("bayes_accuracy_s"))],
        ["Bayes accuracy of S^c alone", num(g.get("bayes_accuracy_sc"))],
        ["Bayes accuracy of all blocks", num(g.get("bayes_accuracy_all"))],
        ["sub-optimal (margin " + num(g.get("margin")) + ")", num(g.get("suboptimal"))],
    ]
    return section(
        "generalization", "Generalization", g.get("summary"), tables=[table("", ["", "value"], rows)]
    )


CHECK = Check(name="generalization", run=run, report_section=report_section)
