"""The FastAPI application factory.

``create_app`` wires settings, the database, the artifact store and an executor (how committed jobs are
handed on; see service/dispatch.py). It imports nothing from torch or sbengine: the API process stays
small and starts fast, and tests/service/test_no_torch.py keeps it that way.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import errors
from service.auth import KeyCache
from service.body_limit import BodyLimitMiddleware
from service.db import Database
from service.dispatch import Executor, NoExecutor
from service.metrics import AppMetrics, MetricsMiddleware
from service.routes import artifacts, audits, datasets, health, jobs, models, uploads
from service.settings import Settings, get_settings
from service.storage import ArtifactStore

API_VERSION = "0.1.0"


def create_app(
    settings: Settings | None = None, *, db: Database | None = None, executor: Executor | None = None
) -> FastAPI:
    settings = settings or get_settings()
    db = db or Database.connect(settings.database_url)
    executor = executor or NoExecutor()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor.start()
        try:
            yield
        finally:
            executor.stop()

    app = FastAPI(
        title="sbaudit",
        version=API_VERSION,
        summary="Audit neural networks for simplicity bias.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = ArtifactStore(settings.artifacts_dir)
    app.state.executor = executor
    app.state.metrics = AppMetrics(db)
    app.state.key_cache = KeyCache()
    errors.install(app)
    for module in (datasets, models, audits, jobs, artifacts, health):
        app.include_router(module.router)
    app.include_router(uploads.router)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_json_bytes, stream_paths=uploads.UPLOAD_PATHS
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
