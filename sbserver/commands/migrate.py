"""``sbaudit migrate``: bring the database schema up to date (Alembic; also done by ``sbaudit serve``)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Apply the Alembic migrations to SBAUDIT_DATABASE_URL "
        "(default: SQLite in SBAUDIT_DATA_DIR).",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sbserver.commands.common import load_settings, migrate, redact

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = migrate(settings)
    print(f"database {redact(settings.database_url)} is at revision {revision}")
    return 0
