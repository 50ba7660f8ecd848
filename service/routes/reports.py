"""/v1/audits/{id}/report (HTML, or a file to download), /report.json and /results.csv: an audit's results,
figures and how to reproduce it.

They are plain ``def`` routes, so FastAPI runs them in a worker thread: reading the figures from the
artifact store is blocking I/O. A browser that opens the HTML report without a key is sent to the login
page; any other client gets the usual 401 problem.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials

from service.auth import DB, CurrentPrincipal, Principal, _bearer, cookie_key, require_principal
from service.db import Database
from service.errors import Problem
from service.models import Audit
from service.reports.content import Report, gather, page_context
from service.reports.render import html_response
from service.reports.result_rows import result_rows, to_csv
from service.routes.common import PROBLEM_RESPONSES, get_owned, model_response, problem, require_ready
from service.routes.pages import login_redirect, wants_html
from service.schemas.reports import ReportRead

router = APIRouter(prefix="/v1/audits", tags=["audits"], responses=PROBLEM_RESPONSES)

Download = Annotated[
    bool,
    Query(
        description="Answer the page as a file to save (Content-Disposition: attachment; "
        '"<audit id>-report.html"), without links back to this server.'
    ),
]


def attachment(filename: str) -> dict[str, str]:
    """The header that makes a browser save the response as ``filename`` (ids are plain ASCII)."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


async def principal_or_login(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal | RedirectResponse:
    """The caller, or (for a browser with no key, or a stale one in its cookie) a redirect to the login
    page."""
    browser = credentials is None and wants_html(request)
    if browser and cookie_key(request) is None:
        return login_redirect(request)
    try:
        return await require_principal(request, credentials)
    except Problem as exc:
        if browser and exc.status == 401:
            return login_redirect(request)
        raise


def _report(request: Request, db: Database, principal: Principal, audit_id: str, *, embed: bool) -> Report:
    with db.read_session() as session:
        return gather(
            session,
            request.app.state.store,
            owner=principal.owner,
            audit_id=audit_id,
            base_url=str(request.base_url).rstrip("/"),
            api_version=request.app.version,
            embed=embed,
        )


@router.get(
    "/{audit_id}/report",
    response_class=HTMLResponse,
    summary="The audit report (one self-contained HTML page)",
    operation_id="getAuditReportHtml",
    responses={200: {"content": {"text/html": {}}, "description": "The report, plots embedded."}},
)
def audit_report(
    audit_id: str,
    request: Request,
    db: DB,
    principal: Annotated[Principal | RedirectResponse, Depends(principal_or_login)],
    download: Download = False,
) -> Response:
    """The verdict, a table per check, the figures with how to read them, the model's training curves,
    the dataset and model, seeds and versions, and the commands that reproduce the audit. Works offline
    and saved to disk (no external assets: styles inline, figures as data URIs). A queued or running audit
    answers a page saying so. With ``download=true`` the page comes as a file to save, and names the
    server's pages (job, report.json) as text instead of linking to them: a saved file has no server."""
    if isinstance(principal, RedirectResponse):
        return principal
    report = _report(request, db, principal, audit_id, embed=True)
    headers = attachment(f"{report.audit.id}-report.html") if download else None
    return html_response("report.html.j2", headers=headers, **page_context(report, standalone=download))


@router.get(
    "/{audit_id}/report.json",
    response_model=ReportRead,
    summary="The audit report, for machines",
    operation_id="getAuditReport",
)
def audit_report_json(audit_id: str, request: Request, principal: CurrentPrincipal, db: DB) -> Response:
    """The report's content: the audit, dataset and model, the verdict, the results, the figures (with
    captions and download URLs), the environment and the request bodies that reproduce it."""
    return model_response(_report(request, db, principal, audit_id, embed=False).read)


@router.get(
    "/{audit_id}/results.csv",
    summary="The audit's results as CSV",
    operation_id="getAuditResultsCsv",
    response_class=Response,
    responses={
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "One row per check, figure, block and statistic (docs/api.md, Results as CSV).",
        },
        409: problem("The audit has not finished: it has no results yet (problem+json)."),
    },
)
def audit_results_csv(audit_id: str, principal: CurrentPrincipal, db: DB) -> Response:
    """Columns ``audit_id, check, metric, block, statistic, value``: every figure of every check at full
    precision, named as GET /v1/audits/compare names them (service/reports/result_rows.py). An empty
    ``block`` is a figure about the whole model; an empty ``value`` one the engine could not compute."""
    with db.read_session() as session:
        audit = get_owned(session, Audit, "audit", owner=principal.owner, resource_id=audit_id)
        require_ready(audit, "audit", "path.audit_id")
        text = to_csv(audit.id, result_rows(audit.results))
    return Response(text, media_type="text/csv; charset=utf-8", headers=attachment(f"{audit.id}-results.csv"))
