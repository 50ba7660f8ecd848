"""API keys: ``Authorization: Bearer <key>`` on every /v1 route.

A key is 256 random bits, shown once when created; the database keeps only its SHA-256 (a slow password
hash buys nothing for keys this long) and a short prefix to recognise it in listings. Keys are never
logged. Each key belongs to one owner; every query the routes make is filtered by that owner.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, select

from service.db import Database
from service.errors import Problem
from service.ids import new_id
from service.models import ApiKey

KEY_PREFIX = "sbk_"
_bearer = HTTPBearer(auto_error=False, description="An API key from `sbaudit keys create`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner every resource query is scoped to."""

    key_id: str
    owner: str
    is_admin: bool


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, *, owner: str, is_admin: bool = False) -> tuple[str, ApiKey]:
    """Store a new key for ``owner``; returns the plaintext (shown once) and its row."""
    owner = owner.strip()
    if not owner or len(owner) > 100:
        raise ValueError("owner must be 1-100 characters")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"), owner=owner, key_hash=hash_key(plaintext), prefix=plaintext[:12], is_admin=is_admin
    )
    with db.write_session() as session:
        session.add(row)
    return plaintext, row


def count_keys(db: Database) -> int:
    with db.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(ApiKey)) or 0)


def ensure_admin_key(db: Database, key_file: Path) -> str | None:
    """On a fresh installation (no keys at all) create an admin key, store it in ``key_file`` (0600) and
    return it so the caller can print it once. Returns None when keys already exist."""
    if count_keys(db) > 0:
        return None
    plaintext, _ = create_key(db, owner="admin", is_admin=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(plaintext + "\n")
    os.replace(tmp, key_file)
    return plaintext


def lookup(db: Database, key: str) -> Principal | None:
    return _lookup_hash(db, hash_key(key))


def _lookup_hash(db: Database, key_hash: str) -> Principal | None:
    query = select(ApiKey.id, ApiKey.owner, ApiKey.is_admin, ApiKey.revoked_at).where(
        ApiKey.key_hash == key_hash
    )
    with db.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, owner=row.owner, is_admin=row.is_admin)


class KeyCache:
    """Recently verified keys (by hash), so most requests skip the key query and the thread hop it needs.

    Only valid keys are cached, for ``ttl`` seconds: a revoked key stops working within that time.
    """

    def __init__(self, ttl: float = 5.0, max_entries: int = 4096) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)


def get_db(request: Request) -> Database:
    return request.app.state.db


async def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    unauthorized = {"WWW-Authenticate": 'Bearer realm="sbaudit"'}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Problem(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            slug="unauthorized",
            headers=unauthorized,
        )
    cache: KeyCache = request.app.state.key_cache
    key_hash = hash_key(credentials.credentials)
    principal = cache.get(key_hash)
    if principal is None:
        principal = await anyio.to_thread.run_sync(_lookup_hash, get_db(request), key_hash)
        if principal is not None:
            cache.put(key_hash, principal)
    if principal is None:
        raise Problem(401, "invalid or revoked API key", slug="unauthorized", headers=unauthorized)
    request.state.owner = principal.owner
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]
DB = Annotated[Database, Depends(get_db)]
