"""The API application as an import string for uvicorn's multi-process mode (``sbaudit serve`` with
SBAUDIT_API_WORKERS > 1): each uvicorn worker process builds its own app, database pool and Celery
producer from the SBAUDIT_* environment it inherits. The parent already migrated the database and
created the first key, so this does neither.
"""

from __future__ import annotations

import gc

from fastapi import FastAPI


def settle_heap() -> None:
    """Move everything imported and built at start-up out of the garbage collector's way: those objects live
    as long as the process, and full collections that walked them stalled the event loop for 65-95 ms every
    few seconds under load (BENCHMARKS.md). Call it once the app is built, before serving."""
    gc.collect()
    gc.freeze()


def create_app_from_env() -> FastAPI:
    from sbserver.wiring import upload_validator_program
    from service.app import create_app
    from service.db import Database
    from service.settings import get_settings
    from worker.celery_app import CeleryExecutor

    settings = get_settings()
    if not settings.broker_url:
        raise RuntimeError("several API processes need SBAUDIT_BROKER_URL (jobs run in `sbaudit worker`)")
    db = Database.connect(settings.database_url)
    app = create_app(
        settings, db=db, executor=CeleryExecutor(settings, db), upload_validator=upload_validator_program()
    )
    settle_heap()
    return app
