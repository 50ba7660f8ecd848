"""Per-key rate limits: token buckets in a pure ASGI middleware, answering 429 with ``Retry-After``.

Two budgets, each a token bucket: every request (SBAUDIT_RATE_LIMIT_PER_SECOND, burst
SBAUDIT_RATE_LIMIT_BURST) and, on top, the POSTs that create a job (SBAUDIT_JOB_RATE_LIMIT_PER_MINUTE, burst
SBAUDIT_JOB_RATE_LIMIT_BURST). A request takes its tokens before it runs, with no await between the check
and the take, so concurrent requests cannot all pass on the same token; a job-creating request that queues
nothing (answered 4xx or 5xx, or failing) gets its job token back. A rate of 0 disables that budget.
/healthz, /readyz and /metrics are exempt.

A request counts against its API key's bucket once the key is known to be valid, and against the client
address's bucket when it has no key or the database said its key is not valid (made up, mistyped, revoked;
service/auth.py KeyLookup remembers that answer for a while, so repeating a made-up key costs no query). A
key this process has not verified yet is looked up before it is charged: a flood of made-up keys from one
address empties that address's bucket, never a valid key's, and inventing keys buys no fresh budget. The
client address is the peer, or the client a trusted proxy names in X-Forwarded-For
(SBAUDIT_FORWARDED_ALLOW_IPS; service/app.py). A verified key costs a SHA-256 and a few dict lookups: no
database, no thread hop.

The buckets live in each API process: with K uvicorn workers or K API replicas the effective limit is K times
the setting. At most ``max_buckets`` are kept; the least recently used go first (a bucket idle for
burst/rate seconds is full again, the same as a new one).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import KeyLookup, hash_key
from service.db import DATABASE_UNAVAILABLE
from service.errors import PROBLEM_JSON
from service.settings import Settings

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
JOB_CREATING_PATHS = frozenset(
    {"/v1/datasets", "/v1/models", "/v1/audits", "/v1/datasets/uploads", "/v1/models/uploads"}
)
MAX_BUCKETS = 10_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass(frozen=True)
class Budget:
    """``rate`` tokens per second up to ``burst``; ``what`` describes it in the 429's detail."""

    rate: float
    burst: int
    what: str

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class TokenBuckets:
    """One bucket per client for one budget, bounded in number."""

    def __init__(
        self,
        budget: Budget,
        clock: Callable[[], float],
        max_buckets: int = MAX_BUCKETS,
        *,
        job_only: bool = False,
    ) -> None:
        self.budget, self.clock, self.max_buckets, self.job_only = budget, clock, max_buckets, job_only
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, client: str, now: float) -> _Bucket:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.budget.burst), stamp=now)
            self._buckets[client] = bucket
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            elapsed = max(0.0, now - bucket.stamp)
            bucket.tokens = min(float(self.budget.burst), bucket.tokens + elapsed * self.budget.rate)
            bucket.stamp = now
        return bucket

    def wait(self, client: str) -> float:
        """Seconds until ``client`` has a token (0 when it has one now); takes nothing."""
        bucket = self._refilled(client, self.clock())
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / self.budget.rate

    def take(self, client: str) -> None:
        bucket = self._buckets.get(client)  # evicted meanwhile: it would be full again anyway
        if bucket is not None:
            bucket.tokens -= 1.0

    def refund(self, client: str) -> None:
        """Give back a token taken for a request that turned out not to spend it."""
        bucket = self._buckets.get(client)
        if bucket is not None:
            bucket.tokens = min(float(self.budget.burst), bucket.tokens + 1.0)

    def __len__(self) -> int:
        return len(self._buckets)


def _presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request presents: its Bearer token, else the web UI's ``sbaudit_key`` cookie."""
    cookie_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            return token.strip() or None if scheme.lower() == b"bearer" else None
        if name == b"cookie" and b"sbaudit_key=" in value:
            for part in value.split(b";"):
                key, _, token = part.strip().partition(b"=")
                if key == b"sbaudit_key" and token:
                    cookie_key = token
    return cookie_key


class RateLimitMiddleware:
    """Charges each request to its buckets before it runs; ``keys`` tells valid keys from others."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        requests: Budget,
        jobs: Budget,
        keys: KeyLookup,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limits = [
            (TokenBuckets(budget, clock, max_buckets, job_only=job_only), job_only)
            for budget, job_only in ((requests, False), (jobs, True))
            if budget.enabled
        ]

    async def _clients(self, scope: Scope) -> list[tuple[str, str]]:
        """The buckets (id, who) a request is counted against."""
        client = scope.get("client")
        address = ("ip:" + (client[0] if client else "unknown"), "client")
        token = _presented_key(scope["headers"])
        if token is None:
            return [address]
        key_hash = hash_key(token.decode("latin-1"))  # as the route will hash it (Starlette decodes latin-1)
        key = ("key:" + key_hash, "key")
        if self.keys.verified(key_hash):
            return [key]
        if self.keys.known_unknown(key_hash):
            return [address]
        try:
            valid = await self.keys.principal(key_hash) is not None
        except DATABASE_UNAVAILABLE:
            return [key]  # no one can tell; the route's own lookup fails alike and answers 503
        return [key] if valid else [address]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        creates_job = scope["method"] == "POST" and scope["path"].rstrip("/") in JOB_CREATING_PATHS
        clients = await self._clients(scope)
        charges = [
            (buckets, client)
            for buckets, job_only in self.limits
            if creates_job or not job_only
            for client in clients
        ]
        for buckets, (client, who) in charges:
            wait = buckets.wait(client)
            if wait > 0:
                await _too_many(send, scope, buckets.budget, who, wait)
                return
        for buckets, (client, _who) in charges:
            buckets.take(client)
        refundable = [(buckets, client) for buckets, (client, _who) in charges if buckets.job_only]
        if not refundable:
            await self.app(scope, receive, send)
            return

        status: int | None = None

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, note_status)
        finally:
            if status is None or status >= 400:  # the job budget pays for work queued, and none was
                for buckets, client in refundable:
                    buckets.refund(client)


def _describe(budget: Budget) -> str:
    per_minute = budget.what.endswith("/min")
    rate = budget.rate * 60 if per_minute else budget.rate
    return f"{rate:g} {budget.what}"


async def _too_many(send: Send, scope: Scope, budget: Budget, who: str, wait: float) -> None:
    retry_after = max(1, math.ceil(wait))
    detail = f"rate limit of {_describe(budget)} for this {who} exceeded; retry after {retry_after} s"
    body = json.dumps(
        {
            "type": "urn:sbaudit:problem:rate-limited",
            "title": "Too Many Requests",
            "status": 429,
            "detail": detail,
            "instance": scope.get("path", ""),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def budgets(settings: Settings) -> tuple[Budget, Budget]:
    """The two budgets from Settings (the job budget is configured per minute)."""
    return (
        Budget(settings.rate_limit_per_second, settings.rate_limit_burst, "requests/s"),
        Budget(
            settings.job_rate_limit_per_minute / 60.0,
            settings.job_rate_limit_burst,
            "job-creating requests/min",
        ),
    )
