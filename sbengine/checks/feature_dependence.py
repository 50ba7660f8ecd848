"""The feature-dependence check (docs/method.md §3.5): accuracy, AUC and loss after destroying one group of
canonical coordinates at a time (every block, and every coordinate of a small input), by random permutation
and / or class swap. The result is ``{method: [row per group]}``.
"""

from __future__ import annotations

from typing import Any

from sbengine.checks.base import Check, CheckContext, figure, num, section, table
from sbengine.metrics import feature_dependence
from sbengine.plots import new_figure, to_png

OPTIONS = {"methods": ["random", "swap"], "sample_fraction": 1.0}
COORDINATE_PREFIX = "coordinate "  # sbengine.metrics.default_groups names single coordinates so


def run(ctx: CheckContext) -> dict[str, Any]:
    o = ctx.options
    return {
        method: feature_dependence(
            ctx.model,
            ctx.dataset,
            method=method,
            split=ctx.split,
            progress=ctx.progress,
            sample_fraction=o["sample_fraction"],
            seed=ctx.seed,
            device=ctx.device,
        )
        for method in o["methods"]
    }


def dependence_bars(
    rows: list[dict[str, Any]],
    *,
    metric: str = "accuracy",
    title: str = "Feature dependence",
    max_bars: int = 60,
) -> bytes:
    """The metric after destroying each group: a low bar means the model depends on that group."""
    rows = rows[:max_bars]
    plt, fig, ax = new_figure(width=max(6.0, 0.18 * len(rows) + 2), height=3.6)
    values = [r[metric] for r in rows]
    ax.bar(range(len(rows)), values, color=["#d62728" if v < 0.75 else "#1f77b4" for v in values])
    ax.set_xticks(
        range(len(rows)),
        [r["group"].split(":")[0].replace("coordinate ", "c") for r in rows],
        rotation=90,
        fontsize=7,
    )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"{metric} after randomizing")
    ax.set_title(title)
    return to_png(plt, fig)


def figures(result: dict[str, Any], dataset) -> dict[str, bytes]:
    return {
        f"dependence_{method}": dependence_bars(rows, title=f"Feature dependence ({method})")
        for method, rows in result.items()
    }


CAPTIONS = {
    "random": (
        "Feature dependence (random permutation)",
        "Accuracy after permuting each block (and each coordinate, for small inputs) across examples. A low "
        "bar marks a group the model depends on; under simplicity bias only S's bars drop, to chance.",
    ),
    "swap": (
        "Feature dependence (class swap)",
        "Accuracy after giving each example the group's values from an example of another class. A bar "
        "near zero means that group alone decides the prediction; bars that stay high are ignored groups.",
    ),
}


def report_section(by_method: dict[str, Any]) -> dict[str, Any]:
    tables, shown = [], []
    columns = ["group", "coordinates", "accuracy", "AUC"]
    for method, rows in by_method.items():
        cells = [
            [str(r["group"]), num(r.get("coordinates")), num(r.get("accuracy")), num(r.get("auc"))]
            for r in rows
        ]
        blocks = [c for c in cells if not c[0].startswith(COORDINATE_PREFIX)]
        coordinates = [c for c in cells if c[0].startswith(COORDINATE_PREFIX)]
        tables.append(table(f"{method}: per block", columns, blocks))
        if coordinates:
            tables.append(table(f"{method}: per coordinate", columns, coordinates, collapsed=True))
        title, caption = CAPTIONS.get(method, (f"Feature dependence ({method})", CAPTIONS["random"][1]))
        shown.append(figure(f"dependence_{method}", title, caption))
    summary = (
        "Accuracy and AUC after destroying one group of canonical coordinates: low values mark what the "
        "model depends on."
    )
    return section("feature_dependence", "Feature dependence", summary, tables=tables, figures=shown)


CHECK = Check(
    name="feature_dependence", run=run, report_section=report_section, figures=figures, options=OPTIONS
)
