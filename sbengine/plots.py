"""Plotting shared by several figures (docs/method.md §3.4, §7, §8), rendered headless to PNG bytes.

Every function takes JSON-able data (so a stored result can be re-plotted without the model) and returns PNG
bytes. matplotlib is imported lazily with the Agg backend. A plot only one check draws lives in that check's
module (sbengine/checks/); what stays here is what more than one figure uses: the figure / PNG plumbing,
perturbation heatmaps and block shares (PGD and UAP), and the training curves (models, not audits).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np


def new_figure(width: float = 6.0, height: float = 3.6):
    """``(pyplot, figure, axes)`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def to_png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def training_curves(history: list[dict[str, Any]], *, title: str = "Training") -> bytes:
    """Accuracy over updates for every split recorded, plus robust / randomized accuracies when present."""
    plt, fig, ax = new_figure()
    steps = [h["step"] for h in history]
    for key, label in (
        ("train_accuracy", "train"),
        ("val_accuracy", "validation"),
        ("robust_accuracy", "robust (val)"),
        ("s_randomized_accuracy", "S-randomized (val)"),
        ("sc_randomized_accuracy", "S$^c$-randomized (val)"),
    ):
        if any(key in h for h in history):
            ax.plot(steps, [h.get(key, np.nan) for h in history], marker="o", markersize=3, label=label)
    ax.set_xlabel("updates")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return to_png(plt, fig)


def block_bounds(dataset) -> list[tuple[str, int, int]]:
    """``(name, start, stop)`` of every block whose canonical coordinates are one contiguous range: where a
    heatmap draws its block separators."""
    return [
        (b.name, b.indices[0], b.indices[-1] + 1)
        for b in dataset.blocks
        if b.indices == tuple(range(b.indices[0], b.indices[-1] + 1))
    ]


def perturbation_heatmap(
    rows: list[list[float]],
    *,
    block_bounds: list[tuple[str, int, int]] | None = None,
    title: str = "Perturbations in canonical coordinates",
) -> bytes:
    """Each row one example's perturbation, normalised by its max |value|: mass on S shows as one column."""
    plt, fig, ax = new_figure(width=7.0, height=3.8)
    data = np.asarray(rows, dtype=float)
    im = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for _name, _start, stop in block_bounds or []:
        ax.axvline(stop - 0.5, color="black", linewidth=0.6)
    ax.set_xlabel("canonical coordinate")
    ax.set_ylabel("example")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return to_png(plt, fig)


def block_shares(shares: dict[str, Any], *, title: str = "Share of the perturbation per block") -> bytes:
    """|P_block| / |P| per block (mean over examples, or of a single UAP)."""
    plt, fig, ax = new_figure()
    names = list(shares)
    values = [s["mean"] if isinstance(s, dict) else float(s) for s in shares.values()]
    ax.barh(names, values, color="#1f77b4")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("share of l2 norm")
    ax.set_title(title)
    return to_png(plt, fig)
