"""RFC 9457 problem details for every error the API returns.

Routes raise :class:`Problem`; FastAPI's own errors (unknown route, wrong method, a body the schema
rejects) and anything unexpected are converted by the handlers installed in :func:`install`. A request the
schema rejects answers 422 with ``errors: [{"field": "body.n_train", "message": ...}]``; a database that
cannot be reached (restarting, failing over, connections dropped) answers 503 with ``Retry-After``: the
client should retry, and the pools reconnect by themselves (a dropped connection is replaced when it is next
used; see service/db.py); an unexpected exception answers
a bare 500 (the traceback goes to the server log, never to the client).
"""

from __future__ import annotations

import copy
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.db import DATABASE_UNAVAILABLE

log = logging.getLogger("sbaudit.api")

PROBLEM_JSON = "application/problem+json"
_DISCRIMINATORS = ("type", "name")
DATABASE_RETRY_AFTER_SECONDS = 5

# The body of every problem, as Problem.body writes it; problems may carry more members (``field``,
# ``checks``, ...). Published once, as the component ``Problem`` that every error response refers to (see
# ``document``), so generated clients share one error type.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details: the body of every error response.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "urn:sbaudit:problem:<slug>, or about:blank."},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong, for a human."},
        "instance": {"type": "string", "description": "The request path."},
        "errors": {
            "type": "array",
            "description": "Validation problems: one entry per invalid field.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
PROBLEM_SCHEMA_REF = {"$ref": "#/components/schemas/Problem"}


class Problem(Exception):
    """An error response. ``slug`` becomes the problem type ``urn:sbaudit:problem:<slug>``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": f"urn:sbaudit:problem:{self.slug}" if self.slug else "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            out["instance"] = instance
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


def not_found(kind: str, resource_id: str) -> Problem:
    return Problem(404, f"{kind} {resource_id!r} does not exist", slug="not-found")


def field_error(field: str, message: str) -> Problem:
    """A 422 naming one field, for checks the schema cannot express (limits from settings, ids)."""
    return Problem(
        422,
        f"{field}: {message}",
        slug="validation",
        title="Request validation failed",
        errors=[{"field": field, "message": message}],
    )


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance), status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def field_path(loc: tuple[Any, ...] | list[Any], body: Any = None) -> str:
    """``("body", "blocks", 0, "slab", "k")`` -> ``"body.blocks.0.k"``.

    Pydantic puts the tag of a discriminated union into ``loc``; we walk the submitted body alongside and
    drop a part that is just the ``type``/``name`` value of the object it sits in, so the path names a
    field the client actually sent.
    """
    parts: list[str] = []
    node = body
    items = list(loc)
    for i, part in enumerate(items):
        if i == 0 and part == "body":
            parts.append("body")
            continue
        more = i + 1 < len(items)
        if (
            isinstance(node, dict)
            and isinstance(part, str)
            and more
            and any(node.get(d) == part for d in _DISCRIMINATORS)
        ):
            continue
        if isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        parts.append(str(part))
    return ".".join(parts)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    body = getattr(exc, "body", None)
    out = []
    seen = set()
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            field, message = "body", f"invalid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
        else:
            field, message = field_path(loc, body), str(err.get("msg", "invalid value"))
        if (field, message) not in seen:
            seen.add((field, message))
            out.append({"field": field, "message": message})
    return out


def body_parse_problem(exc: StarletteHTTPException) -> Problem | None:
    """FastAPI answers a JSON body it cannot decode for a reason other than a JSON syntax error (bytes that
    are not UTF-8, nesting deeper than the parser's recursion limit) with a bare 400 "There was an error
    parsing the body"; the cause is chained. Those are malformed bodies like any other: 422 naming ``body``,
    saying what is wrong, as for invalid JSON."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        message = f"invalid JSON: not UTF-8 text (byte {cause.start})"
    elif isinstance(cause, RecursionError):
        message = "invalid JSON: nested too deeply"
    elif isinstance(cause, ValueError):
        message = f"invalid JSON: {cause}"
    else:
        return None
    return field_error("body", message)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def document(app: FastAPI) -> None:
    """Add ``PROBLEM_SCHEMA`` to the app's OpenAPI document as ``components/schemas/Problem``.

    Error responses are declared with ``PROBLEM_SCHEMA_REF`` (service/routes/common.py ``problem``). FastAPI
    registers components only for pydantic models, and would declare a model given as a response's
    ``model`` under application/json, not application/problem+json; so the component is added to the
    generated document here (FastAPI's documented way to extend it: replace ``app.openapi``), once, when the
    document is first built.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            components = build().setdefault("components", {})
            schemas = {**components.get("schemas", {}), "Problem": copy.deepcopy(PROBLEM_SCHEMA)}
            components["schemas"] = dict(sorted(schemas.items()))  # in order, as FastAPI lists them
        assert app.openapi_schema is not None  # build() stored it
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Answer every error as problem+json, and publish the ``Problem`` schema those answers follow."""
    document(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = body_parse_problem(exc)
        if unreadable is not None:
            return problem_response(unreadable, request)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return problem_response(
            Problem(exc.status_code, detail, headers=getattr(exc, "headers", None)), request
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        if len(errors) > 3:
            summary += f"; and {len(errors) - 3} more"
        problem = Problem(422, summary, slug="validation", title="Request validation failed", errors=errors)
        return problem_response(problem, request)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, _first_line(exc))
        problem = Problem(
            503,
            "the database is unavailable; retry shortly",
            slug="database-unavailable",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
        return problem_response(problem, request)

    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "an unexpected error occurred; see the server log"), request)
