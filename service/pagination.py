"""Cursor pagination over (created_at, id), newest first.

The cursor is an opaque base64 of the last row's sort key, so pages stay stable while new rows arrive
(an offset would skip or repeat rows). Lists use the (owner, created_at, id) indices.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal, tuple_
from sqlalchemy.orm import Session

from service.errors import field_error


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError) as exc:
        raise field_error("query.cursor", "not a cursor this API returned") from exc


def page_query(query: Select[Any], table: Any, *, limit: int, cursor: str | None) -> Select[Any]:
    """The SQL of one page (one row more than ``limit``, to know whether another page follows); the
    (owner, created_at, id) indices serve it without a sort (tests/service/test_query_plans.py)."""
    if cursor:
        created, row_id = decode_cursor(cursor)
        # A row-value comparison, not the equivalent OR of two conditions: PostgreSQL turns the OR into a
        # bitmap scan plus a sort, the row value into one ordered index range scan. (literal(): the bound
        # parameters tuple_ makes of plain values, spelt out for the type checker.)
        query = query.where(tuple_(table.created_at, table.id) < tuple_(literal(created), literal(row_id)))
    return query.order_by(table.created_at.desc(), table.id.desc()).limit(limit + 1)


def paginate(
    session: Session, query: Select[Any], table: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Rows of ``query`` (a select of ``table``) after ``cursor``, and the cursor of the next page."""
    rows = list(session.scalars(page_query(query, table, limit=limit, cursor=cursor)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
