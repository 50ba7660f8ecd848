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

# The model's figure (drawn by the training job, not by a check). Each check's figures come with their title
# and caption in the section the worker stored for it (sections.figure_captions).
TRAINING_CURVES = "training_curves"
CAPTIONS: dict[str, tuple[str, str]] = {
    TRAINING_CURVES: (
        "Training curves",
        "Accuracy on the training and validation splits over updates (robust and S-/S^c-randomized accuracy "
        "too for adversarial training). Simplicity bias appears as validation accuracy that plateaus at "
        "what S alone allows.",
    ),
}


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


def describe(name: str, captions: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """Title and caption of a figure; figures nobody described get a plain title."""
    if name in captions:
        return captions[name]
    if name in CAPTIONS:
        return CAPTIONS[name]
    return (name.replace("_", " ").capitalize(), "")


def figure_artifacts(artifacts: list[ArtifactRead], order: list[str]) -> list[ArtifactRead]:
    """The PNG artifacts, those named in ``order`` first in that order, then any others by name."""
    pngs = [a for a in artifacts if a.content_type == PNG]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(pngs, key=lambda a: (rank.get(a.kind, len(order)), a.kind))


class EmbedBudget:
    """Bytes of PNG that may still be inlined into one report."""

    def __init__(self, limit: int = MAX_EMBEDDED_BYTES) -> None:
        self.left = limit


def load_figure(
    store: ArtifactStore,
    artifact: ArtifactRead,
    budget: EmbedBudget | None,
    captions: dict[str, tuple[str, str]] | None = None,
) -> Figure:
    """The figure with its data URI, or with a note saying why it is not embedded (``budget`` None: the
    caller only wants the listing, as report.json does). ``captions``: title and caption by figure name."""
    title, caption = describe(artifact.kind, captions or {})
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
