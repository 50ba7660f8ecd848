"""Each check's part of a report, read from the sections the worker stored with the audit.

Every check's engine module writes its own section (sbengine/checks/base.py describes the JSON: a title, a
one-line summary, tables of already formatted cells, the figures to show with their captions), and the
worker stores them on the audit row. This module only reads them into ``Section`` / ``Table`` for the
template, the same way for every check: the service knows no check by name, so a new check needs no change
here. A section it cannot read (an unexpected shape), or a check whose results came without one, is shown
as the raw JSON of its results instead: a report never fails because of one section. Audits stored before
the worker wrote sections are read by legacy.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sbaudit.api")

DASH = "—"
MAX_RAW_CHARS = 20_000
# An entry of a raw result bigger than this as JSON (a histogram, a heatmap: plotted, not read) is left out.
MAX_RAW_ENTRY_CHARS = 2_000


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    collapsed: bool = False  # long per-coordinate tables start folded (<details>)


@dataclass
class Section:
    check: str
    title: str
    summary: str | None = None
    tables: list[Table] = field(default_factory=list)
    raw: str | None = None


def num(value: Any, digits: int = 3) -> str:
    """``0.503``; integers as they are; missing values and non-numbers as a dash."""
    if isinstance(value, bool) or value is None:
        return DASH if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return DASH


def mean_std(value: Any) -> str:
    """``mean ± std`` for a ``{"mean", "std"}`` summary, the number itself otherwise."""
    if isinstance(value, dict):
        if value.get("std") is None:
            return num(value.get("mean"))
        return f"{num(value.get('mean'))} ± {num(value.get('std'))}"
    return num(value)


def _readable(value: Any) -> Any:
    too_long = len(json.dumps(value, default=str)) > MAX_RAW_ENTRY_CHARS
    return "… (left out: too long to read)" if too_long else value


def raw_json(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: _readable(v) for k, v in value.items()}
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "\n…"


def raw_section(check: str, value: Any) -> Section:
    title = check.replace("_", " ").capitalize()
    return Section(check, title, "The raw results of this check:", raw=raw_json(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _cell(value: Any) -> str:
    return DASH if value is None else str(value)


def read_section(stored: dict[str, Any]) -> Section:
    """A stored section as the template uses it; TypeError / KeyError / ValueError on an unexpected shape."""
    summary = stored.get("summary")
    tables = [
        Table(
            _text(t.get("caption", "")),
            [_cell(c) for c in t["columns"]],
            [[_cell(c) for c in row] for row in t["rows"]],
            bool(t.get("collapsed", False)),
        )
        for t in stored.get("tables") or []
    ]
    return Section(
        _text(stored["check"]), _text(stored["title"]), None if summary is None else _text(summary), tables
    )


def sections(results: dict[str, Any] | None, stored: list[Any]) -> list[Section]:
    """One section per check, in the order the checks ran: the stored one, or the raw results."""
    by_check = {s.get("check"): s for s in stored if isinstance(s, dict)}
    out = []
    for check, value in (results or {}).items():
        try:
            if check not in by_check:
                raise KeyError("no section was stored for this check")
            out.append(read_section(by_check[check]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.warning("report: the %s section could not be read: %s", check, exc)
            out.append(raw_section(check, value))
    return out


def figure_captions(stored: list[Any]) -> dict[str, tuple[str, str]]:
    """``{figure name: (title, caption)}`` from the stored sections, in their reading order."""
    out: dict[str, tuple[str, str]] = {}
    for s in stored:
        for f in (s.get("figures") or []) if isinstance(s, dict) else []:
            if isinstance(f, dict) and isinstance(f.get("name"), str):
                out.setdefault(f["name"], (str(f.get("title") or f["name"]), str(f.get("caption") or "")))
    return out
