"""The Jinja2 environment of the reports and the UI, and the headers every HTML response carries.

Autoescaping is on for every template: names, errors and anything else a user supplied are escaped.
Pages are self-contained (inline CSS, inline script, images as data URIs), so the Content-Security-Policy
can forbid every external source: nothing loads from elsewhere, scripts only talk to this origin.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.reports.sections import DASH, mean_std, num

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def delta(value: int | float | None) -> str:
    """``+0.125`` / ``-0.004`` / ``+2`` / ``0``; a change too small for three decimals in scientific
    notation."""
    if value is None:
        return DASH
    if value == 0:
        return "0"
    if isinstance(value, int):
        return f"{value:+d}"
    return f"{value:+.1e}" if abs(value) < 0.0005 else f"{value:+.3f}"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["mean_std"] = mean_std
    env.filters["delta"] = delta
    env.filters["percent"] = lambda value: "—" if value is None else f"{100 * float(value):.0f}%"
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2)
    env.filters["when"] = lambda value: "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def html_response(
    template: str, *, status_code: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    """The page, with the security headers (and ``Cache-Control: no-store``: pages show private data)."""
    all_headers = {**SECURITY_HEADERS, "Cache-Control": "no-store", **(headers or {})}
    return HTMLResponse(render(template, **context), status_code=status_code, headers=all_headers)
