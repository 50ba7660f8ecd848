"""``sbaudit keys create --owner NAME`` / ``keys list`` / ``keys revoke KEY_ID_OR_PREFIX``:
manage API keys."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="create, list and revoke API keys", description="Manage API keys.")
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
    revoke = sub.add_parser(
        "revoke",
        help="revoke a key; every running API process refuses it from the next request on",
        description="Revoke an API key. Requests with it get 401 at once, in every API process that shares "
        "this data dir (and within seconds in any other).",
    )
    revoke.add_argument(
        "key", metavar="KEY_ID_OR_PREFIX", help="a key id (key_...), or a unique prefix of it or of the key"
    )
    revoke.set_defaults(handler=run_revoke)


def _database(settings=None):
    from sbserver.commands.common import load_settings, require_migrated
    from service.db import Database

    settings = settings or load_settings()
    require_migrated(settings)
    return Database.connect(settings.database_url, pooled=False)


def run_create(args: argparse.Namespace) -> int:
    from sbclient.cli.errors import CliError
    from service.auth import create_key

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


def run_revoke(args: argparse.Namespace) -> int:
    from sbclient.cli.errors import CliError
    from sbserver.commands.common import load_settings
    from service.revocation import KeyNotFound, revoke_key

    settings = load_settings()
    db = _database(settings)
    try:
        revoked = revoke_key(db, args.key, marker=settings.key_revocation_file)
    except KeyNotFound as exc:
        raise CliError(str(exc)) from None
    finally:
        db.dispose()
    if revoked.already_revoked:
        print(f"{revoked.key_id} (owner {revoked.owner!r}) was already revoked; nothing changed")
    else:
        print(f"revoked {revoked.key_id} (owner {revoked.owner!r}); requests with it now get 401")
    return 0
