"""Helpers shared by the service subcommands (serve, migrate, keys, worker)."""

from __future__ import annotations

from typing import Any

from sbclient.cli.errors import CliError


def load_settings(**overrides: Any):
    """Settings from SBAUDIT_* plus command-line overrides; a bad value is a one-line CLI error."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CliError(f"invalid setting SBAUDIT_{field.upper()}: {err['msg']}") from None


def redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database url>"


def migrate(settings) -> str:
    """Upgrade the schema to head; returns the revision. Errors become one-line CLI errors."""
    from service import migrate as migrations

    try:
        migrations.upgrade(settings.database_url)
        return migrations.current_revision(settings.database_url) or "base"
    except Exception as exc:
        raise CliError(
            f"cannot migrate {redact(settings.database_url)}: {' '.join(str(exc).split())[:300]}"
        ) from None


def require_migrated(settings) -> None:
    from pathlib import Path

    from service import migrate as migrations

    url = settings.database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CliError(f"there is no database at {url} yet: run `sbaudit migrate` (or `sbaudit serve`) first")
    try:
        current = migrations.current_revision(settings.database_url)
    except Exception as exc:
        raise CliError(
            f"cannot reach the database {redact(settings.database_url)}: {type(exc).__name__}"
        ) from None
    head = migrations.head_revision()
    if current != head:
        raise CliError(
            f"the database {redact(settings.database_url)} is at revision {current or 'none'}, not {head}: "
            "run `sbaudit migrate` first"
        )
