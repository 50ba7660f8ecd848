"""``sbaudit keys create --owner NAME`` / ``sbaudit keys list``: manage API keys."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="create and list API keys", description="Manage API keys.")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="create a key for an owner and print it (shown only once)")
    create.add_argument(
        "--owner", required=True, help="who the key belongs to; resources are scoped to owners"
    )
    create.add_argument("--admin", action="store_true", help="mark the key as an administrator key")
    create.set_defaults(handler=run_create)
    listing = sub.add_parser("list", help="list keys (ids, owners, prefixes; never the keys themselves)")
    listing.set_defaults(handler=run_list)


def _database():
    from service.db import Database
    from worker.cli_support import load_settings, require_migrated

    settings = load_settings()
    require_migrated(settings)
    return Database.connect(settings.database_url, pooled=False)


def run_create(args: argparse.Namespace) -> int:
    from service.auth import create_key
    from worker.cli_common import CliError

    db = _database()
    try:
        plaintext, row = create_key(db, owner=args.owner, is_admin=args.admin)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        db.dispose()
    print(
        f"created {row.id} for owner {row.owner!r}; store the key now, it is not shown again:",
        file=sys.stderr,
    )
    print(plaintext)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from service.models import ApiKey

    db = _database()
    try:
        with db.read_session() as session:
            rows = list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))
    finally:
        db.dispose()
    for row in rows:
        flags = "admin" if row.is_admin else ""
        if row.revoked_at:
            flags = (flags + " revoked").strip()
        print(f"{row.id}  {row.prefix}...  {row.owner}  {row.created_at:%Y-%m-%d %H:%M}  {flags}".rstrip())
    return 0
