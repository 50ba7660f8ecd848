"""Figures people read an audit by (docs/method.md §3.4, §3.6, §7, §8), rendered headless to PNG bytes.

Every function takes the JSON-able result the engine produced (so a stored result can be re-plotted
without the model) and returns PNG bytes. matplotlib is imported lazily with the Agg backend.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

COLORS = {"standard": "#333333", "s_randomized": "#d62728", "sc_randomized": "#1f77b4"}
LABELS = {"standard": "standard", "s_randomized": "S-randomized", "sc_randomized": "S$^c$-randomized"}


def _figure(width: float = 6.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return plt, fig, ax


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def logit_histograms(hist: dict[str, Any], *, title: str = "Positive-class logits") -> bytes:
    """Density of logit₁ − logit₀ over true positives: standard, S-randomized, S^c-randomized overlaid.
    Under simplicity bias the S-randomized histogram collapses across zero while S^c's matches standard."""
    plt, fig, ax = _figure()
    edges = np.asarray(hist["bin_edges"])
    for key in ("standard", "s_randomized", "sc_randomized"):
        if key in hist:
            ax.stairs(hist[key], edges, label=LABELS[key], color=COLORS[key], linewidth=1.8,
                      fill=key == "standard", alpha=0.25 if key == "standard" else 1.0)
    ax.axvline(0.0, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_xlabel("logit$_1$ − logit$_0$ (true positives)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(frameon=False)
    return _png(plt, fig)


def dependence_bars(rows: list[dict[str, Any]], *, metric: str = "accuracy", title: str = "Feature dependence",
                    max_bars: int = 60) -> bytes:
    """The metric after destroying each group: a low bar means the model depends on that group."""
    rows = rows[:max_bars]
    plt, fig, ax = _figure(width=max(6.0, 0.18 * len(rows) + 2), height=3.6)
    values = [r[metric] for r in rows]
    ax.bar(range(len(rows)), values, color=["#d62728" if v < 0.75 else "#1f77b4" for v in values])
    ax.set_xticks(range(len(rows)), [r["group"].split(":")[0].replace("coordinate ", "c") for r in rows],
                  rotation=90, fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"{metric} after randomizing")
    ax.set_title(title)
    return _png(plt, fig)


def training_curves(history: list[dict[str, Any]], *, title: str = "Training") -> bytes:
    """Accuracy over updates for every split recorded, plus robust / randomized accuracies when present."""
    plt, fig, ax = _figure()
    steps = [h["step"] for h in history]
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation"),
                       ("robust_accuracy", "robust (val)"), ("s_randomized_accuracy", "S-randomized (val)"),
                       ("sc_randomized_accuracy", "S$^c$-randomized (val)")):
        if any(key in h for h in history):
            ax.plot(steps, [h.get(key, np.nan) for h in history], marker="o", markersize=3, label=label)
    ax.set_xlabel("updates")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return _png(plt, fig)


def perturbation_heatmap(rows: list[list[float]], *, block_bounds: list[tuple[str, int, int]] | None = None,
                         title: str = "Perturbations in canonical coordinates") -> bytes:
    """Each row one example's perturbation, normalised by its max |value|: mass on S shows as one column."""
    plt, fig, ax = _figure(width=7.0, height=3.8)
    data = np.asarray(rows, dtype=float)
    im = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    for _name, _start, stop in block_bounds or []:
        ax.axvline(stop - 0.5, color="black", linewidth=0.6)
    ax.set_xlabel("canonical coordinate")
    ax.set_ylabel("example")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _png(plt, fig)


def block_shares(shares: dict[str, Any], *, title: str = "Share of the perturbation per block") -> bytes:
    """|P_block| / |P| per block (mean over examples, or of a single UAP)."""
    plt, fig, ax = _figure()
    names = list(shares)
    values = [s["mean"] if isinstance(s, dict) else float(s) for s in shares.values()]
    ax.barh(names, values, color="#1f77b4")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("share of l2 norm")
    ax.set_title(title)
    return _png(plt, fig)


def ensemble_members(summary: dict[str, Any], *, title: str = "Members vs ensemble") -> bytes:
    """Test accuracy and S-/S^c-randomized AUC of every member next to the ensemble's."""
    plt, fig, ax = _figure()
    entries = [*summary["members"], summary["ensemble"]]
    names = [e.get("name", f"member {i}") for i, e in enumerate(entries)]
    x = np.arange(len(entries))
    for offset, key, label in ((-0.25, "test_accuracy", "test accuracy"), (0.0, "s_randomized_auc", "S-rand. AUC"),
                               (0.25, "sc_randomized_auc", "S$^c$-rand. AUC")):
        ax.bar(x + offset, [np.nan if e.get(key) is None else e[key] for e in entries], width=0.25, label=label)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return _png(plt, fig)


def decision_boundary(slice_: dict[str, Any], *, title: str = "Decision boundary: S against S$^c$") -> bytes:
    """Predicted class over a sweep of one S and one S^c canonical coordinate (others from real examples),
    data points on top: a boundary parallel to the S^c axis means the S^c coordinate is ignored."""
    from matplotlib.colors import ListedColormap

    plt, fig, ax = _figure(width=5.2, height=4.4)
    s_axis, sc_axis = slice_["s_axis"], slice_["sc_axis"]
    ax.imshow(np.asarray(slice_["predicted"], dtype=float), origin="lower", aspect="auto",
              extent=(s_axis[0], s_axis[-1], sc_axis[0], sc_axis[-1]), interpolation="nearest",
              cmap=ListedColormap(["#d9d9d9", "#8c8c8c", "#bdbdbd", "#636363"]), vmin=0, vmax=3)
    pts = slice_["points"]
    labels = np.asarray(pts["label"])
    for cls, color in ((0, "#1f77b4"), (1, "#d62728")):
        keep = labels == cls
        ax.scatter(np.asarray(pts["s"])[keep], np.asarray(pts["sc"])[keep], s=6, color=color,
                   label=f"class {cls}", alpha=0.8, linewidths=0)
    ax.set_xlabel(f"S coordinate {slice_['s_coordinate']} (canonical)")
    ax.set_ylabel(f"S$^c$ coordinate {slice_['sc_coordinate']} (canonical)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="upper right")
    return _png(plt, fig)


def audit_figures(audit: dict[str, Any], dataset) -> dict[str, bytes]:
    """Every figure an audit result supports, by artifact name (``<name>.png``)."""
    r = audit["results"]
    out: dict[str, bytes] = {}
    rand = r.get("randomization")
    if rand and "histograms" in rand:
        out["logit_histograms"] = logit_histograms(rand["histograms"])
    if rand and rand.get("boundary"):
        out["decision_boundary"] = decision_boundary(rand["boundary"])
    for method, rows in (r.get("feature_dependence") or {}).items():
        out[f"dependence_{method}"] = dependence_bars(rows, title=f"Feature dependence ({method})")
    bounds = [(b.name, b.indices[0], b.indices[-1] + 1) for b in dataset.blocks
              if b.indices == tuple(range(b.indices[0], b.indices[-1] + 1))]
    pgd = r.get("pgd")
    if pgd:
        if pgd.get("heatmap"):
            out["pgd_heatmap"] = perturbation_heatmap(pgd["heatmap"], block_bounds=bounds,
                                                      title="PGD perturbations (canonical coordinates)")
        out["pgd_block_share"] = block_shares(pgd["block_share"], title="Share of the PGD perturbation per block")
    uap = r.get("uap")
    if uap:
        if uap.get("uap"):
            out["uap_vector"] = perturbation_heatmap([_unit_max(uap["uap"])], block_bounds=bounds,
                                                     title="Universal perturbation (canonical coordinates)")
        out["uap_block_share"] = block_shares(uap["block_share"], title="Share of the UAP per block")
    ens = r.get("ensemble")
    if ens:
        out["ensemble_members"] = ensemble_members(_ensemble_rows(ens))
    return out


def _unit_max(v: list[float]) -> list[float]:
    m = max(abs(x) for x in v) or 1.0
    return [x / m for x in v]


def _ensemble_rows(summary: dict[str, Any]) -> dict[str, Any]:
    def flat(row: dict[str, Any], name: str) -> dict[str, Any]:
        return {"name": name, "test_accuracy": row["test_accuracy"],
                "s_randomized_auc": (row.get("s_randomized_auc") or {}).get("mean"),
                "sc_randomized_auc": (row.get("sc_randomized_auc") or {}).get("mean")}

    return {"members": [flat(m, f"member {i}") for i, m in enumerate(summary["members"])],
            "ensemble": flat(summary["ensemble"], "ensemble")}
