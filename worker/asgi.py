"""The API application as an import string for uvicorn's multi-process mode (``sbaudit serve`` with
SBAUDIT_API_WORKERS > 1): each uvicorn worker process builds its own app, database pool and Celery
producer from the SBAUDIT_* environment it inherits. The parent already migrated the database and
created the first key, so this does neither.
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app_from_env() -> FastAPI:
    from service.app import create_app
    from service.db import Database
    from service.settings import get_settings
    from worker.celery_app import CeleryExecutor

    settings = get_settings()
    if not settings.broker_url:
        raise RuntimeError("several API processes need SBAUDIT_BROKER_URL (jobs run in `sbaudit worker`)")
    db = Database.connect(settings.database_url)
    return create_app(settings, db=db, executor=CeleryExecutor(settings, db))
