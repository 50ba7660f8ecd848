"""The ensemble check (docs/method.md §6, App. E.1): every member's reliance next to the ensemble's, with the
same permutations for all, so one sees whether ensembling removed the simplicity bias (it does not, in the
paper). Needs the members: the audited model is then an ``sbengine.ensemble.Ensemble`` of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbengine.checks.base import DASH, Check, CheckContext, figure, mean_std, num, section, table
from sbengine.ensemble import ensemble_audit_summary
from sbengine.plots import new_figure, to_png


def run(ctx: CheckContext) -> dict[str, Any]:
    return ensemble_audit_summary(
        ctx.model,
        ctx.members,
        ctx.dataset,
        simple_blocks=ctx.simple_blocks,
        repeats=ctx.repeats,
        seed=ctx.seed,
        device=ctx.device,
        thresholds=ctx.verdict_thresholds,
    )


def ensemble_members(summary: dict[str, Any], *, title: str = "Members vs ensemble") -> bytes:
    """Test accuracy and S-/S^c-randomized AUC of every member next to the ensemble's (``_flat_rows``)."""
    plt, fig, ax = new_figure()
    entries = [*summary["members"], summary["ensemble"]]
    names = [e.get("name", f"member {i}") for i, e in enumerate(entries)]
    x = np.arange(len(entries))
    for offset, key, label in (
        (-0.25, "test_accuracy", "test accuracy"),
        (0.0, "s_randomized_auc", "S-rand. AUC"),
        (0.25, "sc_randomized_auc", "S$^c$-rand. AUC"),
    ):
        ax.bar(
            x + offset, [np.nan if e.get(key) is None else e[key] for e in entries], width=0.25, label=label
        )
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return to_png(plt, fig)


def _flat_rows(summary: dict[str, Any]) -> dict[str, Any]:
    def flat(row: dict[str, Any], name: str) -> dict[str, Any]:
        return {
            "name": name,
            "test_accuracy": row["test_accuracy"],
            "s_randomized_auc": (row.get("s_randomized_auc") or {}).get("mean"),
            "sc_randomized_auc": (row.get("sc_randomized_auc") or {}).get("mean"),
        }

    return {
        "members": [flat(m, f"member {i}") for i, m in enumerate(summary["members"])],
        "ensemble": flat(summary["ensemble"], "ensemble"),
    }


def figures(result: dict[str, Any], dataset) -> dict[str, bytes]:
    return {"ensemble_members": ensemble_members(_flat_rows(result))}


MEMBERS = figure(
    "ensemble_members",
    "Members against the ensemble",
    "Test accuracy and S-/S^c-randomized AUC of every member and of the ensemble. If the ensemble's "
    "S-randomized AUC sits at chance like its members', ensembling did not remove the simplicity bias.",
)


def report_section(e: dict[str, Any]) -> dict[str, Any]:
    columns = ["", "test accuracy", "S-randomized AUC", "S^c-randomized AUC", "reliance"]

    def row(name: str, r: dict[str, Any]) -> list[str]:
        return [
            name,
            num(r.get("test_accuracy")),
            mean_std(r.get("s_randomized_auc")),
            mean_std(r.get("sc_randomized_auc")),
            str(r.get("verdict_code") or DASH),
        ]

    rows = [row(f"member {i}", m) for i, m in enumerate(e.get("members") or [])]
    rows.append(row("ensemble", e.get("ensemble") or {}))
    return section(
        "ensemble", "Ensemble", e.get("summary"), tables=[table("", columns, rows)], figures=[MEMBERS]
    )


CHECK = Check(name="ensemble", run=run, report_section=report_section, figures=figures, needs_members=True)
