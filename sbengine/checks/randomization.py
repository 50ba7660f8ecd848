"""The randomization check (docs/method.md §3.1-3.4): S-randomized and S^c-randomized AUC, accuracy, loss
and logit shift, each the mean ± std over ``repeats`` permutations, the logit histograms, and a slice of the
decision boundary over one S and one S^c coordinate.

The metrics themselves live in sbengine.metrics because the verdict and the ensemble check use them too;
this module is what the audit adds around them: the boundary slice, the figures and the report section.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbengine.boundary import decision_slice
from sbengine.checks.base import DASH, Check, CheckContext, blocks_text, figure, mean_std, num, section, table
from sbengine.metrics import randomization
from sbengine.plots import new_figure, to_png

COLORS = {"standard": "#333333", "s_randomized": "#d62728", "sc_randomized": "#1f77b4"}
LABELS = {"standard": "standard", "s_randomized": "S-randomized", "sc_randomized": "S$^c$-randomized"}


def run(ctx: CheckContext) -> dict[str, Any]:
    common = {"seed": ctx.seed, "device": ctx.device}
    out = randomization(
        ctx.model,
        ctx.dataset,
        simple_blocks=ctx.simple_blocks,
        split=ctx.split,
        repeats=ctx.repeats,
        progress=ctx.progress,
        **common,
    )
    boundary = decision_slice(
        ctx.model, ctx.dataset, simple_blocks=ctx.simple_blocks, split=ctx.split, **common
    )
    if boundary is not None:
        out["boundary"] = boundary
    shape = tuple(ctx.dataset.input_shape)
    if len(shape) == 3 and shape[0] in (1, 3):  # images: the report shows a few composites (figures())
        out["composites_shown"] = min(EXAMPLES_SHOWN, int(ctx.dataset.split(ctx.split)[1].shape[0]))
    return out


def logit_histograms(hist: dict[str, Any], *, title: str = "Positive-class logits") -> bytes:
    """Density of logit₁ − logit₀ over true positives: standard, S-randomized, S^c-randomized overlaid.
    Under simplicity bias the S-randomized histogram collapses across zero while S^c's matches standard."""
    plt, fig, ax = new_figure()
    edges = np.asarray(hist["bin_edges"])
    for key in ("standard", "s_randomized", "sc_randomized"):
        if key in hist:
            ax.stairs(
                hist[key],
                edges,
                label=LABELS[key],
                color=COLORS[key],
                linewidth=1.8,
                fill=key == "standard",
                alpha=0.25 if key == "standard" else 1.0,
            )
    ax.axvline(0.0, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("logit$_1$ − logit$_0$ (true positives)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False)
    return to_png(plt, fig)


def decision_boundary(slice_: dict[str, Any], *, title: str = "Decision boundary: S against S$^c$") -> bytes:
    """Predicted class over a sweep of one S and one S^c canonical coordinate (others from real examples),
    data points on top: a boundary parallel to the S^c axis means the S^c coordinate is ignored."""
    from matplotlib.colors import ListedColormap

    plt, fig, ax = new_figure(width=5.2, height=4.4)
    s_axis, sc_axis = slice_["s_axis"], slice_["sc_axis"]
    ax.imshow(
        np.asarray(slice_["predicted"], dtype=float),
        origin="lower",
        aspect="auto",
        extent=(s_axis[0], s_axis[-1], sc_axis[0], sc_axis[-1]),
        interpolation="nearest",
        cmap=ListedColormap(["#d9d9d9", "#8c8c8c", "#bdbdbd", "#636363"]),
        vmin=0,
        vmax=3,
    )
    pts = slice_["points"]
    labels = np.asarray(pts["label"])
    for cls, color in ((0, "#1f77b4"), (1, "#d62728")):
        keep = labels == cls
        ax.scatter(
            np.asarray(pts["s"])[keep],
            np.asarray(pts["sc"])[keep],
            s=6,
            color=color,
            label=f"class {cls}",
            alpha=0.8,
            linewidths=0,
        )
    ax.set_xlabel(f"S coordinate {slice_['s_coordinate']} (canonical)")
    ax.set_ylabel(f"S$^c$ coordinate {slice_['sc_coordinate']} (canonical)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    return to_png(plt, fig)


EXAMPLES_SHOWN = 4


def composite_examples(result: dict[str, Any], dataset, *, count: int = EXAMPLES_SHOWN) -> bytes | None:
    """A few images of the audited split with S outlined, and their first S- and S^c-randomized composites
    (the same draws as the first repeat): what the model was shown. None for inputs that are not images."""
    import torch

    from sbengine.device import generator
    from sbengine.metrics import composite

    shape = tuple(dataset.input_shape)
    split = result.get("split", "test")
    if not result.get("composites_shown") or split not in dataset.splits:
        return None
    simple, complex_ = list(result["simple_blocks"]), list(result["complex_blocks"])
    x, _ = dataset.split(split)
    z = torch.from_numpy(np.ascontiguousarray(x)).flatten(1)
    seed = int(result.get("seed", 0))
    rows = min(count, int(result["composites_shown"]), z.shape[0])
    s_mask = dataset.selection(simple, split)
    columns = {
        "example": z[:rows],
        "S-randomized": composite(z, torch.from_numpy(s_mask), generator(seed, 10, 0))[:rows],
        "S$^c$-randomized": composite(
            z, torch.from_numpy(dataset.selection(complex_, split)), generator(seed, 11, 0)
        )[:rows],
    }
    s_region = np.broadcast_to(s_mask, (z.shape[0], s_mask.shape[1]))[:rows].reshape(rows, *shape)[:, 0]
    plt, fig, axes = new_figure(width=2.0 * 3, height=2.0 * rows)
    fig.clf()
    grid = fig.subplots(rows, 3, squeeze=False)
    for r in range(rows):
        for c, (title, images) in enumerate(columns.items()):
            ax = grid[r][c]
            image = images[r].reshape(shape).numpy().transpose(1, 2, 0).clip(0, 1)
            ax.imshow(image[..., 0] if shape[0] == 1 else image, cmap="gray" if shape[0] == 1 else None)
            if c == 0:  # S outlined on the original
                ax.contour(s_region[r].astype(float), levels=[0.5], colors="#ffd400", linewidths=1.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    return to_png(plt, fig)


def figures(result: dict[str, Any], dataset) -> dict[str, bytes]:
    out = {}
    if "histograms" in result:
        out["logit_histograms"] = logit_histograms(result["histograms"])
    if result.get("boundary"):
        out["decision_boundary"] = decision_boundary(result["boundary"])
    examples = composite_examples(result, dataset) if dataset is not None else None
    if examples is not None:
        out["composites"] = examples
    return out


HISTOGRAMS = figure(
    "logit_histograms",
    "Logits under randomization",
    "Density of logit₁ − logit₀ over the positive examples: standard (filled), S-randomized (red) and "
    "S^c-randomized (blue). Under simplicity bias the S-randomized histogram collapses across zero while "
    "the S^c-randomized one matches the standard: the model reads its decision off S alone.",
)
BOUNDARY = figure(
    "decision_boundary",
    "Decision boundary: S against S^c",
    "Predicted class while one S coordinate and one S^c coordinate sweep a grid (the other coordinates "
    "come from real examples), data points on top. A boundary that only moves along the S axis means "
    "the model ignores the S^c coordinate.",
)


COMPOSITES = figure(
    "composites",
    "Examples and their composites",
    "A few audited images with the border of S outlined in yellow, then what the model saw: "
    "S-randomized (S taken from a random other example, the rest kept) and S^c-randomized (the "
    "reverse). For per-example regions (masks) this is the mixed-random compositing of Xiao et al. "
    "(ICLR 2021); for fixed blocks the same with a constant mask.",
)


def report_section(r: dict[str, Any]) -> dict[str, Any]:
    rows = [
        ["AUC", num(r.get("auc")), mean_std(r.get("s_randomized_auc")), mean_std(r.get("sc_randomized_auc"))],
        [
            "accuracy",
            num(r.get("accuracy")),
            mean_std(r.get("s_randomized_accuracy")),
            mean_std(r.get("sc_randomized_accuracy")),
        ],
        [
            "loss",
            num(r.get("loss")),
            mean_std(r.get("s_randomized_loss")),
            mean_std(r.get("sc_randomized_loss")),
        ],
        [
            "logit shift",
            DASH,
            mean_std(r.get("s_randomized_logit_shift")),
            mean_std(r.get("sc_randomized_logit_shift")),
        ],
    ]
    summary = (
        f"Split {r.get('split', DASH)}, {num(r.get('n'))} examples, {num(r.get('repeats'))} permutations "
        f"per figure (mean ± std). S = blocks {blocks_text(r.get('simple_blocks'))}, "
        f"S^c = blocks {blocks_text(r.get('complex_blocks'))}."
    )
    tables = [
        table(
            "Standard, S-randomized and S^c-randomized",
            ["metric", "standard", "S-randomized", "S^c-randomized"],
            rows,
        )
    ]
    shown = ([HISTOGRAMS] if "histograms" in r else []) + ([BOUNDARY] if r.get("boundary") else [])
    shown += [COMPOSITES] if r.get("composites_shown") else []
    return section("randomization", "S / S^c randomization", summary, tables=tables, figures=shown)


CHECK = Check(name="randomization", run=run, report_section=report_section, figures=figures)
