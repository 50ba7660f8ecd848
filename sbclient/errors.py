"""What can go wrong talking to a server, each as one readable line.

A refusal from the API is an RFC 9457 problem (``application/problem+json``): ``status``, ``title``,
``detail`` and, for invalid requests, ``errors: [{"field": "body.n_train", "message": ...}]``. Its
``detail`` already names the fields, so the one-line form is ``"<status> <detail>"``, e.g.
``422 body.n_train: must be at most 1000000``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

_MAX_LINE = 1000


class ClientError(Exception):
    """Anything sbclient raises: an API refusal, an unreachable server, a corrupted download."""


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ApiError(ClientError):
    """The server answered with an error status. ``str()`` is one line: ``"<status> <detail>"``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.body = body
        super().__init__(f"{status} {_one_line(detail or title)[:_MAX_LINE]}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read a problem+json body; anything else (a proxy's HTML page) becomes the detail, shortened."""
        try:
            body = response.json()
        except ValueError:
            text = _one_line(response.text)[:300]
            return cls(response.status_code, response.reason_phrase, text, body=response.text)
        if not isinstance(body, dict):
            return cls(response.status_code, response.reason_phrase, _one_line(str(body)), body=body)
        errors = [
            FieldError(str(e.get("field", "")), str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        detail = body.get("detail")
        return cls(
            response.status_code,
            str(body.get("title") or response.reason_phrase),
            str(detail) if detail is not None else _one_line(str(body)),
            errors=errors,
            body=body,
        )


class ConnectionFailed(ClientError):
    """No usable answer at all: connection refused, DNS failure, timeout, a connection cut mid-way."""

    def __init__(self, url: str, cause: BaseException, hint: str | None = None) -> None:
        self.url = url
        self.cause = cause
        reason = _one_line(str(cause)) or type(cause).__name__
        message = f"cannot reach {url}: {reason}"
        if isinstance(cause, httpx.ConnectError):
            message += " (is the server running?)"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


def _one_line(text: str) -> str:
    return " ".join(text.split())
