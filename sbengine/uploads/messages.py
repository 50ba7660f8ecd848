"""One-line messages about a user's file, shared by the checkpoint and dataset checks."""

from __future__ import annotations

MAX_LISTED = 20


def one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:500]


def listed(names: list[str]) -> str:
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(repr(n[:100]) for n in names[:MAX_LISTED]) + more
