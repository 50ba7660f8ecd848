"""The web UI: log in with an API key, the owner's audits and jobs, and a live job page.

The key is kept in the ``sbaudit_key`` cookie (HttpOnly, SameSite=Strict, Path=/), which service/auth.py
accepts for GET and HEAD requests only, so the pages, the reports and the job event stream work from the
browser while every POST and DELETE still needs the Authorization header. Pages are not part of the API
contract (left out of the OpenAPI schema). A page opened without a valid cookie redirects to the login
form, which then returns to the page (``next``, accepted only as a path on this site).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import COOKIE_NAME, DB, Principal, cookie_key, principal_for_key
from service.db import Database
from service.ids import looks_like
from service.jobstore import TERMINAL_STATES
from service.models import Audit, Dataset, Job, Model
from service.reports.content import HEADLINES, verdict_label
from service.reports.render import SECURITY_HEADERS, html_response
from service.views import job_read

router = APIRouter(include_in_schema=False)

HOME = "/ui"
LOGIN = "/ui/login"
INDEX_ROWS = 50
MAX_KEY_CHARS = 500
MAX_NEXT_CHARS = 2000


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this site, else the home page. A single leading "/" is required:
    "//host" and "/\\host" are read by browsers as another host; control characters could split headers."""
    if (
        not value
        or len(value) > MAX_NEXT_CHARS
        or not value.startswith("/")
        or value[1:2] in ("/", "\\")
        or any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in value)
    ):
        return HOME
    return value


def wants_html(request: Request) -> bool:
    """A browser navigating (it asks for HTML), as opposed to an API client."""
    return "text/html" in request.headers.get("accept", "")


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


def login_redirect(request: Request) -> RedirectResponse:
    """303 to the login form, coming back to this page afterwards; a stale cookie is dropped."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = redirect(f"{LOGIN}?next={quote(safe_next(here), safe='/')}")
    if COOKIE_NAME in request.cookies:
        response.delete_cookie(COOKIE_NAME, path="/")
    return response


async def page_principal(request: Request) -> Principal | None:
    """The owner named by the cookie, or None (no cookie, or a key that is unknown or revoked)."""
    key = cookie_key(request)
    return None if key is None else await principal_for_key(request, key)


PagePrincipal = Annotated[Principal | None, Depends(page_principal)]


@router.get("/")
def root() -> RedirectResponse:
    return redirect(HOME)


@router.get(LOGIN)
def login_form(next: str | None = None) -> Response:
    return html_response("login.html.j2", next=safe_next(next), error=None)


@router.post(LOGIN)
async def login(
    request: Request, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = HOME
) -> Response:
    """Check the key; on success keep it in the cookie and go on to ``next``."""
    key = key.strip()
    principal = await principal_for_key(request, key) if 0 < len(key) <= MAX_KEY_CHARS else None
    if principal is None:
        return html_response(
            "login.html.j2",
            status_code=401,
            next=safe_next(next),
            error="That API key is not valid, or it was revoked.",
        )
    response = redirect(safe_next(next))
    response.set_cookie(
        COOKIE_NAME,
        key,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/ui/logout")
def logout() -> RedirectResponse:
    response = redirect(LOGIN)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


def _names(session: Session, table: Any, ids: set[str], owner: str) -> dict[str, str | None]:
    if not ids:
        return {}
    rows = session.execute(select(table.id, table.name).where(table.id.in_(ids), table.owner == owner))
    return {row.id: row.name for row in rows}


def index_rows(db: Database, owner: str) -> dict[str, Any]:
    """The newest audits (with their model's and dataset's names) and jobs of ``owner``."""
    with db.read_session() as session:
        audits = list(
            session.scalars(
                select(Audit)
                .where(Audit.owner == owner)
                .order_by(Audit.created_at.desc(), Audit.id.desc())
                .limit(INDEX_ROWS)
            )
        )
        jobs = list(
            session.scalars(
                select(Job)
                .where(Job.owner == owner)
                .order_by(Job.created_at.desc(), Job.id.desc())
                .limit(INDEX_ROWS)
            )
        )
        models = _names(session, Model, {a.model_id for a in audits}, owner)
        datasets = _names(session, Dataset, {a.dataset_id for a in audits}, owner)
        audit_rows = [
            {
                "row": a,
                "label": verdict_label(a),
                "headline": HEADLINES[verdict_label(a)],
                "model_name": models.get(a.model_id),
                "dataset_name": datasets.get(a.dataset_id),
            }
            for a in audits
        ]
        return {"audits": audit_rows, "jobs": [job_read(j) for j in jobs]}


@router.get(HOME)
def index(request: Request, db: DB, principal: PagePrincipal) -> Response:
    if principal is None:
        return login_redirect(request)
    return html_response(
        "index.html.j2", owner=principal.owner, limit=INDEX_ROWS, **index_rows(db, principal.owner)
    )


def _owned_job(db: Database, owner: str, job_id: str) -> Job | None:
    if not looks_like("job", job_id):
        return None
    with db.read_session() as session:
        return session.scalar(select(Job).where(Job.id == job_id, Job.owner == owner))


@router.get("/ui/jobs/{job_id}")
def job_page(job_id: str, request: Request, db: DB, principal: PagePrincipal) -> Response:
    """The job's state, stage, progress, step/total, metrics, ETA and error, kept live by the job's event
    stream (or by polling when the stream is unavailable)."""
    if principal is None:
        return login_redirect(request)
    row = _owned_job(db, principal.owner, job_id)
    if row is None:
        return html_response(
            "error.html.j2",
            status_code=404,
            title="No such job",
            detail=f"There is no job {job_id!r} for you.",
        )
    job = job_read(row)
    return html_response(
        "job.html.j2", job=job, terminal=sorted(TERMINAL_STATES), eta=getattr(job, "eta_seconds", None)
    )
