"""API keys: ``Authorization: Bearer <key>`` on every /v1 route.

A key is 256 random bits, shown once when created; the database keeps only its SHA-256 (a slow password
hash buys nothing for keys this long) and a short prefix to recognise it in listings. Keys are never
logged. Each key belongs to one owner; every query the routes make is filtered by that owner.

Browsers cannot send an Authorization header from a link, an <img> or an EventSource, so the web UI
(service/routes/pages.py) stores the key in a cookie, ``sbaudit_key`` (HttpOnly, SameSite=Strict, Path=/).
When a request carries no Authorization header at all, that cookie authenticates it, **for GET and HEAD
only**: a browser attaches cookies to cross-site form posts too, so a cookie must never authorize a request
that changes anything (CSRF). POST and DELETE always need the Bearer header. The Bearer path is unchanged
and comes first; both paths share the KeyCache.

Revocation (``sbaudit keys revoke``) is effective for the very next request in every API process, on any
host sharing the data dir: the revoking command appends to ``<data dir>/keys-revoked`` after committing, and
each KeyCache checks that file on every lookup (see KeyCache and service/revocation.py).

A key is looked up once per process and then served from the KeyCache; a key the database does not know
(made up, mistyped or revoked) is remembered for a while as well (UnknownKeys), so a client repeating it
costs no query. The rate limiter (service/ratelimit.py) asks the same KeyLookup which bucket a request goes
to, before the route does: it then finds the answer cached.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, bindparam, func, select

from service.db import Database
from service.errors import Problem
from service.ids import new_id
from service.models import ApiKey
from service.revocation import marker_signature

KEY_PREFIX = "sbk_"
COOKIE_NAME = "sbaudit_key"
COOKIE_METHODS = frozenset({"GET", "HEAD"})
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


# Built once: constructing it cost more than the query (each made-up key of a flood is looked up once).
_KEY_BY_HASH = select(ApiKey.id, ApiKey.owner, ApiKey.is_admin, ApiKey.revoked_at).where(
    ApiKey.key_hash == bindparam("key_hash")
)


def _lookup_hash(conn: Connection, key_hash: str) -> Principal | None:
    row = conn.execute(_KEY_BY_HASH, {"key_hash": key_hash}).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, owner=row.owner, is_admin=row.is_admin)


class KeyCache:
    """Recently verified keys (by hash), so most requests skip the key query and the thread hop it needs.

    Revocation is effective at once (service/revocation.py): every ``get`` compares the signature of the
    revocation marker file -- one ``stat`` -- and empties the cache when a key was revoked anywhere since.
    An entry also expires after ``ttl`` seconds and is then re-verified against the database, the backstop
    for an API process that cannot see the marker. A lookup that started before a revocation must not
    re-insert the revoked key: ``get`` remembers, per missed key, the marker signature it saw, and ``put``
    stores the key only while the marker still has that signature (the oldest outstanding miss counts).
    """

    def __init__(
        self, ttl: float = 5.0, max_entries: int = 4096, revocation_marker: Path | None = None
    ) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self.revocation_marker = revocation_marker
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._misses: dict[str, tuple[int, int, int] | None] = {}
        self._signature = self._marker_signature()
        self._lock = threading.Lock()

    def _marker_signature(self) -> tuple[int, int, int] | None:
        return marker_signature(self.revocation_marker) if self.revocation_marker is not None else None

    def get(self, key_hash: str) -> Principal | None:
        signature = self._marker_signature()
        if signature != self._signature:
            with self._lock:
                self._entries.clear()
                self._signature = signature
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            with self._lock:
                if len(self._misses) >= self.max_entries:
                    self._misses.clear()
                self._misses.setdefault(key_hash, signature)
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        """Cache a key the database just verified, after a ``get`` for it missed."""
        with self._lock:
            seen = self._misses.pop(key_hash, _NO_MISS)
            if seen is _NO_MISS or seen != self._marker_signature():
                return  # a key was revoked while this one was being looked up: don't trust the answer
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def knows(self, key_hash: str) -> bool:
        """Whether the key was verified recently (no stat, no expiry check: for rate-limit bucketing)."""
        return key_hash in self._entries


_NO_MISS = object()


class UnknownKeys:
    """Hashes of keys the database recently said it has no valid key for, each forgotten ``ttl`` seconds
    after it was last confirmed.

    Bounded: past ``max_entries`` the least recently presented entry goes, so a flood of distinct made-up
    keys holds a fixed amount of memory (and each of those costs its one query). Revocation only ever adds
    unknown keys, and a new key is 256 fresh random bits no one can have presented before, so an entry never
    hides a valid key.
    """

    def __init__(
        self, ttl: float = 30.0, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.max_entries, self.clock = ttl, max_entries, clock
        self._expiries: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key_hash: str) -> bool:
        expires = self._expiries.get(key_hash)
        if expires is None:
            return False
        if expires < self.clock():
            self._expiries.pop(key_hash, None)
            return False
        self._expiries.move_to_end(key_hash)
        return True

    def add(self, key_hash: str) -> None:
        self._expiries[key_hash] = self.clock() + self.ttl
        self._expiries.move_to_end(key_hash)
        while len(self._expiries) > self.max_entries:
            self._expiries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._expiries)


class KeyLookup:
    """Who holds a key (by its hash): the KeyCache, then UnknownKeys, then the database, which fills them.

    One per app, used on its event loop (by the rate limiter and by the routes' authentication)."""

    def __init__(self, db: Database, cache: KeyCache, unknown: UnknownKeys) -> None:
        self.db, self.cache, self.unknown = db, cache, unknown

    def verified(self, key_hash: str) -> bool:
        """Whether this process verified the key recently (no stat, no query: for rate-limit bucketing)."""
        return self.cache.knows(key_hash)

    def known_unknown(self, key_hash: str) -> bool:
        """Whether the database said recently that no valid key has this hash."""
        return key_hash in self.unknown

    async def principal(self, key_hash: str) -> Principal | None:
        """The key's principal, or None when it is unknown or revoked. Raises what the database raises
        when it cannot be reached (nothing is cached then)."""
        principal = self.cache.get(key_hash)
        if principal is not None or key_hash in self.unknown:
            return principal
        principal = await self.db.run_read(_lookup_hash, key_hash)
        if principal is None:
            self.unknown.add(key_hash)
        else:
            self.cache.put(key_hash, principal)
        return principal


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    unauthorized = {"WWW-Authenticate": 'Bearer realm="sbaudit"'}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        key = cookie_key(request)
        if key is None:
            raise Problem(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                slug="unauthorized",
                headers=unauthorized,
            )
    else:
        key = credentials.credentials
    principal = await principal_for_key(request, key)
    if principal is None:
        raise Problem(401, "invalid or revoked API key", slug="unauthorized", headers=unauthorized)
    request.state.owner = principal.owner
    return principal


def cookie_key(request: Request) -> str | None:
    """The key in the ``sbaudit_key`` cookie, when it may authenticate this request: a GET or HEAD with no
    Authorization header (see the module docstring: never a POST or DELETE)."""
    if request.method not in COOKIE_METHODS or "authorization" in request.headers:
        return None
    return request.cookies.get(COOKIE_NAME) or None


async def principal_for_key(request: Request, key: str) -> Principal | None:
    """The owner of ``key``, or None when it is unknown or revoked (answered from caches when it can be)."""
    lookup: KeyLookup = request.app.state.key_lookup
    return await lookup.principal(hash_key(key))


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]


async def _request_db(request: Request) -> Database:
    """``get_db`` as a coroutine: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop
    per request for a mere attribute read."""
    db: Database = request.app.state.db
    return db


DB = Annotated[Database, Depends(_request_db)]
