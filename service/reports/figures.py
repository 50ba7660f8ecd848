"""The plots of an audit and of its model, read from the artifact store and embedded as data URIs.

A report must stay one self-contained file, so each PNG is inlined as ``data:image/png;base64,...``. The
total is capped (``MAX_EMBEDDED_BYTES``): a figure over the budget, or one whose blob is missing from the
store, is listed with a visible note and its download URL instead of failing the page.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

from service.schemas.common import ArtifactRead
from service.storage import ArtifactStore

log = logging.getLogger("sbaudit.api")

PNG = "image/png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_EMBEDDED_BYTES = 12 * 1024 * 1024

# How to read each figure the worker draws (sbengine.plots.audit_figures), in the order a reader wants them.
CAPTIONS: dict[str, tuple[str, str]] = {
    "logit_histograms": (
        "Logits under randomization",
        "Density of logit₁ − logit₀ over the positive examples: standard (filled), S-randomized (red) and "
        "S^c-randomized (blue). Under simplicity bias the S-randomized histogram collapses across zero while "
        "the S^c-randomized one matches the standard: the model reads its decision off S alone.",
    ),
    "decision_boundary": (
        "Decision boundary: S against S^c",
        "Predicted class while one S coordinate and one S^c coordinate sweep a grid (the other coordinates "
        "come from real examples), data points on top. A boundary that only moves along the S axis means "
        "the model ignores the S^c coordinate.",
    ),
    "dependence_random": (
        "Feature dependence (random permutation)",
        "Accuracy after permuting each block (and each coordinate, for small inputs) across examples. A low "
        "bar marks a group the model depends on; under simplicity bias only S's bars drop, to chance.",
    ),
    "dependence_swap": (
        "Feature dependence (class swap)",
        "Accuracy after giving each example the group's values from an example of another class. A bar "
        "near zero means that group alone decides the prediction; bars that stay high are ignored groups.",
    ),
    "pgd_heatmap": (
        "PGD perturbations in canonical coordinates",
        "One row per example: its PGD perturbation, scaled to its largest entry (red positive, blue "
        "negative); vertical lines separate blocks. A simplicity-biased model is attacked through S: the "
        "mass sits in S's columns.",
    ),
    "pgd_block_share": (
        "Share of the PGD perturbation per block",
        "Mean share of the perturbation's ℓ2 norm on each block. Mass concentrated on S says the cheapest "
        "way to flip the model goes through the simple features.",
    ),
    "uap_vector": (
        "Universal adversarial perturbation",
        "The one perturbation added to every example, in canonical coordinates, scaled to its largest entry. "
        "A UAP that lives on S alone shows that one direction in S flips most predictions.",
    ),
    "uap_block_share": (
        "Share of the UAP per block",
        "Share of the universal perturbation's ℓ2 norm on each block. Under simplicity bias nearly all of "
        "it lies on S.",
    ),
    "ensemble_members": (
        "Members against the ensemble",
        "Test accuracy and S-/S^c-randomized AUC of every member and of the ensemble. If the ensemble's "
        "S-randomized AUC sits at chance like its members', ensembling did not remove the simplicity bias.",
    ),
    "training_curves": (
        "Training curves",
        "Accuracy on the training and validation splits over updates (robust and S-/S^c-randomized accuracy "
        "too for adversarial training). Simplicity bias appears as validation accuracy that plateaus at "
        "what S alone allows.",
    ),
}
ORDER = list(CAPTIONS)


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    artifact_id: str
    url: str
    size: int
    data_uri: str | None = None
    note: str | None = None


def describe(name: str) -> tuple[str, str]:
    """Title and caption of a figure; figures this version does not know get a plain title."""
    if name in CAPTIONS:
        return CAPTIONS[name]
    if name.startswith("dependence_"):
        method = name.removeprefix("dependence_")
        return (f"Feature dependence ({method})", CAPTIONS["dependence_random"][1])
    return (name.replace("_", " ").capitalize(), "")


def figure_artifacts(artifacts: list[ArtifactRead]) -> list[ArtifactRead]:
    """The PNG artifacts, known figures first in reading order, then any others by name."""
    pngs = [a for a in artifacts if a.content_type == PNG]
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(pngs, key=lambda a: (rank.get(a.kind, len(ORDER)), a.kind))


class EmbedBudget:
    """Bytes of PNG that may still be inlined into one report."""

    def __init__(self, limit: int = MAX_EMBEDDED_BYTES) -> None:
        self.left = limit


def load_figure(store: ArtifactStore, artifact: ArtifactRead, budget: EmbedBudget | None) -> Figure:
    """The figure with its data URI, or with a note saying why it is not embedded (``budget`` None: the
    caller only wants the listing, as report.json does)."""
    title, caption = describe(artifact.kind)
    figure = Figure(artifact.kind, title, caption, artifact.id, artifact.url, artifact.size)
    if budget is None:
        return figure
    if artifact.size > budget.left:
        figure.note = "Not embedded: this report's image budget is spent. Download it from its URL."
        return figure
    try:
        data = store.path_for(artifact.sha256).read_bytes()
    except (OSError, ValueError):
        log.error("artifact %s: blob %s is missing from the store", artifact.id, artifact.sha256)
        figure.note = "This figure's file is missing from the artifact store."
        return figure
    if not data.startswith(PNG_SIGNATURE):
        figure.note = "This figure's file is not a PNG image."
        return figure
    budget.left -= len(data)
    figure.data_uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return figure
