"""Everything one audit report shows, gathered once for the HTML page and for report.json.

``gather`` loads the audit (owner-scoped: another owner's audit is a 404, as GET /v1/audits/{id}), its
dataset, its model and their artifacts, reads each check's section and the figures (embedding them only for
the HTML page; titles, captions and order come from the sections) and writes the reproduce commands. It runs
in a worker thread (the report routes are plain ``def``): reading PNGs from the store is blocking file I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Audit, Dataset, Model
from service.reports import legacy, reproduce
from service.reports.figures import EmbedBudget, Figure, figure_artifacts, load_figure
from service.reports.sections import Section, figure_captions, num, sections
from service.routes.common import get_owned
from service.schemas.common import ArtifactRead
from service.schemas.reports import FigureRead, ReportRead, ReproduceRead, VerdictLabel
from service.storage import ArtifactStore
from service.views import artifacts_by_resource, audit_read, dataset_read, model_read

# sbengine.metrics.classify's codes, read as an answer to "is this model simplicity-biased?".
VERDICT_LABELS: dict[str, VerdictLabel] = {
    "exclusively_s": "simplicity_biased",
    "mostly_s": "simplicity_biased",
    "exclusively_sc": "not_simplicity_biased",
    "mostly_sc": "not_simplicity_biased",
    "both": "not_simplicity_biased",
    "not_predictive": "inconclusive",
}
HEADLINES: dict[VerdictLabel, str] = {
    "simplicity_biased": "Simplicity-biased",
    "not_simplicity_biased": "Not simplicity-biased",
    "inconclusive": "Inconclusive",
    "waiting": "Waiting for its inputs",
    "queued": "Queued",
    "running": "Running",
    "failed": "Failed",
    "canceled": "Canceled",
}
# A label by its name: an audit's state that has a label of its own (queued, failed, ...).
_LABELS: dict[str, VerdictLabel] = {label: label for label in HEADLINES}


@dataclass
class Report:
    audit: Audit
    dataset: Dataset | None
    model: Model | None
    read: ReportRead
    figures: list[Figure]
    training_curves: Figure | None
    sections: list[Section]

    @property
    def headline(self) -> str:
        return HEADLINES[self.read.verdict_label]

    @property
    def finished(self) -> bool:
        return self.audit.status == "ready"


def verdict_label(audit: Audit) -> VerdictLabel:
    if audit.status != "ready":
        return _LABELS.get(audit.status, "running")
    return VERDICT_LABELS.get(audit.verdict_code or "", "inconclusive")


def _owned_or_none(session: Session, table: Any, owner: str, resource_id: str | None) -> Any:
    if not resource_id:
        return None
    return session.scalar(select(table).where(table.id == resource_id, table.owner == owner))


def _figure_read(figure: Figure) -> FigureRead:
    return FigureRead(
        name=figure.name,
        title=figure.title,
        caption=figure.caption,
        artifact_id=figure.artifact_id,
        url=figure.url,
        size=figure.size,
    )


def gather(
    session: Session,
    store: ArtifactStore,
    *,
    owner: str,
    audit_id: str,
    base_url: str,
    api_version: str,
    embed: bool,
) -> Report:
    audit = get_owned(session, Audit, "audit", owner=owner, resource_id=audit_id)
    return assemble(session, store, audit, base_url=base_url, api_version=api_version, embed=embed)


def assemble(
    session: Session,
    store: ArtifactStore,
    audit: Audit,
    *,
    base_url: str,
    api_version: str,
    embed: bool,
    audit_artifacts: list[ArtifactRead] | None = None,
) -> Report:
    """The report of ``audit`` (a row the caller may read). ``audit_artifacts``: the audit's artifacts when
    they are not recorded yet: the worker renders the report of an audit it is about to record (its MLflow
    run carries it), from a detached copy of the row with the results filled in."""
    owner = audit.owner
    dataset = _owned_or_none(session, Dataset, owner, audit.dataset_id)
    model = _owned_or_none(session, Model, owner, audit.model_id)
    recorded = [r.id for r in (audit, dataset, model) if r is not None]
    artifacts = artifacts_by_resource(session, recorded)
    if audit_artifacts is not None:
        artifacts[audit.id] = audit_artifacts
    budget = EmbedBudget() if embed else None
    finished = audit.status == "ready"
    check_sections, captions = check_parts(audit) if finished else ([], {})
    pngs = figure_artifacts(artifacts[audit.id], list(captions)) if finished else []
    figures = [load_figure(store, a, budget, captions) for a in pngs]
    curves = next((a for a in artifacts[model.id] if a.kind == "training_curves"), None) if model else None
    training_curves = load_figure(store, curves, budget) if curves is not None and finished else None
    label = verdict_label(audit)
    audit_view = audit_read(audit, artifacts[audit.id])
    read = ReportRead(
        audit=audit_view,
        dataset=dataset_read(dataset, artifacts[dataset.id]) if dataset else None,
        model=model_read(model, artifacts[model.id]) if model else None,
        verdict_label=label,
        verdict=audit.verdict,
        verdict_code=audit_view.verdict_code,
        results=audit.results,
        figures=[_figure_read(f) for f in figures],
        training_curves=_figure_read(training_curves) if training_curves else None,
        environment=(audit.params or {}).get("environment"),
        api_version=api_version,
        report_url=f"/v1/audits/{audit.id}/report",
        job_url=f"/ui/jobs/{audit.job_id}",
        reproduce=ReproduceRead(
            **reproduce.commands(base_url=base_url, dataset=dataset, model=model, audit=audit)
        ),
    )
    return Report(audit, dataset, model, read, figures, training_curves, check_sections)


def page_context(report: Report, *, standalone: bool = False) -> dict[str, Any]:
    """The variables of report.html.j2 for ``report``: the one way the HTML report is filled in, whether the
    API serves it or the worker renders it for an MLflow run. ``standalone``: the page is a file to keep (the
    download), which names the server's pages instead of linking to them."""
    description = (report.dataset.description or {}) if report.dataset else {}
    simple = report.read.audit.simple_blocks or list(description.get("simple_blocks") or [])
    return {
        "report": report,
        "blocks": block_rows(description, simple),
        "simple_blocks": simple,
        "settings_text": settings_text,
        "generated": datetime.now(UTC),
        "standalone": standalone,
    }


def check_parts(audit: Audit) -> tuple[list[Section], dict[str, tuple[str, str]]]:
    """The checks' sections and their figures' (title, caption) in reading order: from the sections the
    worker stored, or, for an audit finished before it stored any, from legacy.py."""
    if audit.sections is None:
        return legacy.sections(audit.results), dict(legacy.CAPTIONS)
    return sections(audit.results, audit.sections), figure_captions(audit.sections)


def block_rows(description: dict[str, Any], simple_blocks: list[int]) -> list[list[str]]:
    """The dataset's blocks: index, type, dimensions, margin, whether it is in S, Bayes accuracy."""
    rows = []
    for i, block in enumerate(description.get("blocks") or []):
        params = block.get("params") or {}
        rows.append(
            [
                str(i),
                str(block.get("name") or block.get("kind") or "—"),
                str(block.get("kind") or params.get("type") or "—"),
                num(len(block.get("indices") or [])),
                num(params.get("margin")),
                "S" if i in simple_blocks else "S^c",
                num(block.get("bayes_accuracy")),
            ]
        )
    return rows


def settings_text(values: dict[str, Any] | None) -> str:
    """``name=fcn, width=100, depth=2``: a small config object on one line (nested objects as JSON)."""
    parts = []
    for key, value in (values or {}).items():
        if value is None:
            continue
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
        parts.append(f"{key}={text}")
    return ", ".join(parts) or "—"
