"""Prefixed random identifiers (``ds_``, ``mdl_``, ``aud_``, ``job_``, ``art_``, ``key_``).

The prefix tells a human (and a 404 handler) what an id names; the random part is 96 bits, URL-safe."""

from __future__ import annotations

import re
import secrets

PREFIXES = {
    "dataset": "ds",
    "model": "mdl",
    "audit": "aud",
    "job": "job",
    "artifact": "art",
    "key": "key",
}

_ID_RE = re.compile(r"^[a-z]{2,3}_[A-Za-z0-9_-]{16}$")


def new_id(kind: str) -> str:
    return f"{PREFIXES[kind]}_{secrets.token_urlsafe(12)}"


def looks_like(kind: str, value: str) -> bool:
    """Whether ``value`` has the shape of an id of ``kind`` (cheap pre-check before a query)."""
    return bool(_ID_RE.match(value)) and value.startswith(PREFIXES[kind] + "_")
