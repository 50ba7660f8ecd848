"""Migrations are the only way tables are made, and they match the ORM models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service import migrate
from service.db import make_engine
from service.models import Base


def test_upgrade_creates_every_table_and_matches_the_models(settings):
    migrate.upgrade(settings.database_url)
    assert migrate.current_revision(settings.database_url) == migrate.head_revision()
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(settings):
    migrate.upgrade(settings.database_url)
    migrate.upgrade(settings.database_url)
    assert migrate.current_revision(settings.database_url) == migrate.head_revision()


def test_nothing_calls_create_all():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for package in ("service", "worker"):
        for path in (root / package).rglob("*.py"):
            assert ".create_all(" not in path.read_text(), path
