"""Revoking API keys, effective at once in every API process.

The database row (``api_keys.revoked_at``) is the truth; ``lookup`` refuses revoked keys. What makes the
revocation *immediate* despite each API process caching verified keys (service.auth.KeyCache) is a marker
file, ``<data dir>/keys-revoked``: after committing ``revoked_at`` we append one line to it, and every key
cache compares the file's (inode, mtime, size) on each lookup -- one ``stat``, microseconds -- and empties
itself when they change. The data dir is shared by all API processes and workers in both runtime modes, so
this reaches other processes and hosts too. Where an API process cannot see the file, the cache's TTL is the
backstop: an entry is re-verified against the database after at most ``KeyCache.ttl`` seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_, select

from service.db import Database
from service.models import ApiKey, utcnow


class KeyNotFound(LookupError):
    """No key, or more than one key, matches what the operator typed."""


@dataclass(frozen=True)
class Revocation:
    key_id: str
    owner: str
    already_revoked: bool


def marker_signature(marker: Path) -> tuple[int, int, int]:
    """What changes whenever a key is revoked; (0, 0, 0) while no key ever was."""
    try:
        st = os.stat(marker)
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def signal_revocation(marker: Path, key_id: str) -> None:
    """Append to the marker (its size grows even when the clock's resolution hides the mtime change)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{utcnow().isoformat()} {key_id}\n".encode())
    finally:
        os.close(fd)


def find_key(db: Database, id_or_prefix: str) -> ApiKey:
    """The one key whose id, id prefix or key prefix (as ``keys list`` shows it) is ``id_or_prefix``."""
    text = id_or_prefix.strip().removesuffix("...")
    if len(text) < 4:
        raise KeyNotFound("give a key id or at least 4 characters of its id or key prefix")
    with db.read_session() as session:
        exact = session.scalar(select(ApiKey).where(ApiKey.id == text))
        if exact is not None:
            return exact
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = list(
            session.scalars(
                select(ApiKey)
                .where(or_(ApiKey.id.like(pattern, escape="\\"), ApiKey.prefix.like(pattern, escape="\\")))
                .order_by(ApiKey.created_at)
                .limit(6)
            )
        )
    if not rows:
        raise KeyNotFound(f"no API key matches {text!r} (see `sbaudit keys list`)")
    if len(rows) > 1:
        names = ", ".join(r.id for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise KeyNotFound(f"{text!r} is ambiguous: it matches {names}; give more characters")
    return rows[0]


def revoke_key(db: Database, id_or_prefix: str, *, marker: Path) -> Revocation:
    """Set ``revoked_at`` (once), then signal every API process. Revoking twice changes nothing."""
    key = find_key(db, id_or_prefix)
    with db.write_session() as session:
        row = session.get_one(ApiKey, key.id)  # find_key just read it
        already = row.revoked_at is not None
        if not already:
            row.revoked_at = utcnow()
    # Signal even on a repeat: it is harmless, and repairs a marker lost between commit and append.
    signal_revocation(marker, key.id)
    return Revocation(key_id=key.id, owner=key.owner, already_revoked=already)
