"""Liveness, readiness and Prometheus metrics (unauthenticated; keep them off the public network)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.errors import PROBLEM_JSON
from service.routes.common import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers", operation_id="getHealth")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _check_database(request: Request) -> str | None:
    try:
        with request.app.state.db.read_session() as session:
            session.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # report, don't raise: this is the readiness answer
        return f"database unreachable: {type(exc).__name__}"


def _check_broker(url: str) -> str | None:
    from kombu.connection import Connection  # only when a broker is configured

    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return None
    except Exception as exc:
        return f"broker unreachable: {type(exc).__name__}"


@router.get(
    "/readyz",
    summary="Readiness: database (and broker, when configured) reachable",
    operation_id="getReadiness",
    responses={503: problem("Something is unreachable; `checks` says what (problem+json).")},
)
async def readyz(request: Request) -> JSONResponse:
    checks = {"database": await anyio.to_thread.run_sync(_check_database, request)}
    broker = request.app.state.settings.broker_url
    if broker:
        checks["broker"] = await anyio.to_thread.run_sync(_check_broker, broker)
    checks["executor"] = request.app.state.executor.ready()
    failing = {k: v for k, v in checks.items() if v}
    if failing:
        body = {
            "type": "urn:sbaudit:problem:not-ready",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "; ".join(failing.values()),
            "checks": {k: v or "ok" for k, v in checks.items()},
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    return JSONResponse({"status": "ready", "checks": {k: "ok" for k in checks}})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="getMetrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The Prometheus text format."}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.exposed
    payload = await anyio.to_thread.run_sync(generate_latest, registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
