"""``sbaudit gc [--dry-run] [--grace-seconds S]``: remove what no database row needs
(see service/garbage.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gc",
        help="remove unreferenced blobs, stale job files and uploads, expired idempotency records",
        description="Remove artifact blobs no artifact references, scratch directories and checkpoints of "
        "finished or deleted jobs, abandoned uploads and expired idempotency records. Safe while the server "
        "runs: files changed in the last --grace-seconds and files of running jobs are kept.",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=None,
        metavar="S",
        help="keep blobs, temp files and uploads changed in the last S seconds (default: 3600)",
    )
    p.set_defaults(handler=run)


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"


def run(args: argparse.Namespace) -> int:
    from sbclient.cli.errors import CliError
    from sbserver.commands.common import load_settings, require_migrated
    from service.db import Database
    from service.garbage import DEFAULT_GRACE_SECONDS, collect_garbage

    grace = DEFAULT_GRACE_SECONDS if args.grace_seconds is None else args.grace_seconds
    if grace < 0:
        raise CliError("--grace-seconds must be 0 or more")
    settings = load_settings()
    require_migrated(settings)
    db = Database.connect(settings.database_url, pooled=False)
    try:
        report = collect_garbage(settings, db, grace_seconds=grace, dry_run=args.dry_run)
    finally:
        db.dispose()
    verb = "would remove" if args.dry_run else "removed"
    for removal in report.removed:
        print(f"{verb} {removal.what} {removal.path} ({removal.size} bytes)")
    records = report.idempotency_records
    if records:
        print(f"{verb} {records} expired idempotency record{'s' if records != 1 else ''}")
    freed = report.bytes_freed
    summary = "would free" if args.dry_run else "freed"
    print(f"{summary} {freed} bytes ({_human(freed)}) in {len(report.removed)} item(s)")
    return 0
