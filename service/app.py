"""The FastAPI application factory.

``create_app`` wires settings, the database, the artifact store and an executor (how committed jobs are
handed on; see service/dispatch.py). It imports nothing from torch or sbengine: the API process stays
small and starts fast, and tests/service/test_no_torch.py keeps it that way.

The client address every part of the app sees (``scope["client"]``: the rate limits, the access log) is the
peer's, unless the peer is a trusted proxy (SBAUDIT_FORWARDED_ALLOW_IPS): then it is the client that proxy
names in X-Forwarded-For. uvicorn's ProxyHeadersMiddleware does that here, in the app, so it holds under any
server and in-process tests; `sbaudit serve` turns uvicorn's own copy of it off, so the header is read once.

/docs and /redoc need no network: their assets are served by the app (fastapi-offline).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from service import caps, errors, quota
from service.auth import KeyCache, KeyLookup, UnknownKeys
from service.body_limit import BodyLimitMiddleware
from service.db import Database
from service.dispatch import Executor, NoExecutor
from service.job_ends import JobEnds
from service.metrics import AppMetrics, MetricsMiddleware
from service.ratelimit import RateLimitMiddleware, budgets
from service.routes import (
    architectures,
    artifacts,
    audits,
    comparisons,
    datasets,
    health,
    jobs,
    models,
    pages,
    reports,
    uploads,
    usage,
)
from service.settings import Settings, get_settings
from service.storage import ArtifactStore

API_VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    executor: Executor | None = None,
    upload_validator: Sequence[str] | None = None,
    job_ends: JobEnds | None = None,
) -> FastAPI:
    """The API. ``executor`` runs the jobs it queues (none: jobs wait for an external worker);
    ``upload_validator`` is the command of the program that checks uploaded files (none: uploads answer
    503). Both come from the composition root (sbserver), so the service imports neither worker nor engine.
    ``job_ends`` is what an executor in this process notifies when a job ends, so that requests waiting for
    the job answer at once (service/job_ends.py)."""
    settings = settings or get_settings()
    db = db or Database.connect(settings.database_url)
    executor = executor or NoExecutor()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor.start()
        try:
            yield
        finally:
            executor.stop()
            await db.close_loop_engine()

    # /docs (Swagger UI) and /redoc load their scripts and styles from the app itself (fastapi-offline ships
    # them, under /static-offline-docs), not from a CDN: they render on a host with no Internet access.
    app = FastAPIOffline(
        title="sbaudit",
        version=API_VERSION,
        summary="Audit neural networks for simplicity bias.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = ArtifactStore(settings.artifacts_dir)
    app.state.executor = executor
    app.state.upload_validator = list(upload_validator) if upload_validator else None
    app.state.metrics = AppMetrics(db)
    app.state.key_cache = KeyCache(revocation_marker=settings.key_revocation_file)
    app.state.key_lookup = KeyLookup(db, app.state.key_cache, UnknownKeys())
    app.state.usage_gate = quota.UsageGate()
    app.state.streams = caps.stream_slots(settings.max_streams_per_key)
    app.state.long_polls = caps.long_poll_slots(settings.max_long_polls_per_key)
    app.state.job_ends = job_ends or JobEnds()
    app.state.clock = time.monotonic  # the rate limiter's clock; tests move it
    errors.install(app)
    # Before audits: /v1/audits/compare must not be read as GET /v1/audits/{audit_id}.
    app.include_router(comparisons.router)
    for module in (datasets, models, audits, jobs, artifacts, health):
        app.include_router(module.router)
    app.include_router(uploads.router)
    app.include_router(architectures.router)
    app.include_router(usage.router)
    app.include_router(reports.router)  # HTML and JSON audit reports
    app.include_router(pages.router)  # the web UI (not in the OpenAPI schema)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_json_bytes, stream_paths=uploads.UPLOAD_PATHS
    )
    requests_budget, jobs_budget = budgets(settings)
    app.add_middleware(
        RateLimitMiddleware,
        requests=requests_budget,
        jobs=jobs_budget,
        keys=app.state.key_lookup,
        clock=lambda: app.state.clock(),
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app
