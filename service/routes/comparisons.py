"""/v1/audits/compare (JSON) and /v1/audits/compare/report (HTML): finished audits side by side.

The app includes this router before the audits router, so that ``/v1/audits/compare`` is never read as
the audit id ``compare`` by ``GET /v1/audits/{audit_id}`` (nor ``.../compare/report`` as that audit's
report). Plain ``def`` routes, as the reports: they read whole audits in a worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from service.auth import DB, CurrentPrincipal, Principal
from service.db import Database
from service.errors import field_error
from service.reports.comparison import IDS_FIELD, compare, comparison_path, owned_finished_audits
from service.reports.content import HEADLINES
from service.reports.render import html_response
from service.routes.common import PROBLEM_RESPONSES, model_response, problem
from service.routes.reports import principal_or_login
from service.schemas.comparisons import MAX_COMPARED_AUDITS, AuditComparison

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=PROBLEM_RESPONSES)

CompareIds = Annotated[
    str,
    Query(
        min_length=1,
        max_length=1000,
        description=f"Comma-separated ids of 2 to {MAX_COMPARED_AUDITS} of your finished audits; the first "
        "is the baseline the deltas are taken from.",
        examples=["aud_AAAAAAAAAAAAAAAA,aud_BBBBBBBBBBBBBBBB"],
    ),
]
# A check with more figures than this (feature dependence per coordinate) shows them folded on the page.
COLLAPSE_ROWS = 40
NOT_FINISHED: dict[int | str, dict[str, Any]] = {
    409: problem("One of the audits has not finished; `detail` names it (problem+json).")
}


def parse_ids(text: str) -> list[str]:
    """The ids in order; 422 naming ``query.ids`` for an empty entry, too few or too many, or a repeat."""
    ids = [part.strip() for part in text.split(",")]
    if not all(ids):
        raise field_error(IDS_FIELD, "an empty entry: separate audit ids with single commas")
    if not 2 <= len(ids) <= MAX_COMPARED_AUDITS:
        raise field_error(IDS_FIELD, f"name 2 to {MAX_COMPARED_AUDITS} audits, not {len(ids)}")
    repeated = next((i for n, i in enumerate(ids) if i in ids[:n]), None)
    if repeated is not None:
        raise field_error(IDS_FIELD, f"audit {repeated} is named twice")
    return ids


def _comparison(db: Database, principal: Principal, ids: str) -> AuditComparison:
    wanted = parse_ids(ids)
    with db.read_session() as session:
        return compare(owned_finished_audits(session, principal.owner, wanted))


@router.get(
    "/compare",
    response_model=AuditComparison,
    summary="Compare finished audits figure by figure",
    operation_id="compareAudits",
    responses=NOT_FINISHED,
)
def compare_audits(ids: CompareIds, principal: CurrentPrincipal, db: DB) -> Response:
    """Every figure of every check (the rows of the CSV export, at full precision) of each audit side by
    side, with its delta from the first audit, and each audit's verdict and whether it changed."""
    return model_response(_comparison(db, principal, ids))


@router.get(
    "/compare/report",
    response_class=HTMLResponse,
    summary="Compare finished audits (one self-contained HTML page)",
    operation_id="compareAuditsHtml",
    responses={
        200: {"content": {"text/html": {}}, "description": "The comparison as a page."},
        **NOT_FINISHED,
    },
)
def compare_audits_html(
    ids: CompareIds,
    request: Request,
    db: DB,
    principal: Annotated[Principal | RedirectResponse, Depends(principal_or_login)],
) -> Response:
    """The verdicts, then each check's figures side by side with their deltas; changed figures stand out.
    Authenticated as the report (API key, or the web UI's cookie)."""
    if isinstance(principal, RedirectResponse):
        return principal
    comparison = _comparison(db, principal, ids)
    return html_response(
        "comparison.html.j2",
        comparison=comparison,
        headlines=HEADLINES,
        json_url=comparison_path([a.id for a in comparison.audits]),
        collapse_rows=COLLAPSE_ROWS,
        generated=datetime.now(UTC),
    )
