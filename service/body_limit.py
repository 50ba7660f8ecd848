"""Refuse oversized request bodies (413 problem) before the app reads them into memory.

JSON bodies of this API are small; without a bound a client could make the server buffer gigabytes.
Multipart bodies sent to ``stream_paths`` (the upload routes) are exempt here: those routes stream to disk
and enforce SBAUDIT_MAX_UPLOAD_BYTES themselves. Anywhere else a multipart body gets the JSON limit.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_JSON

_METHODS = {"POST", "PUT", "PATCH"}


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, stream_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.stream_paths = frozenset(p.rstrip("/") for p in stream_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        if multipart and scope["path"].rstrip("/") in self.stream_paths:
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                await self._reject(scope, send)
                return
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): buffer up to the limit, then hand the body on.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._reject(scope, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}), send
        )

    async def _reject(self, scope: Scope, send: Send) -> None:
        problem = {
            "type": "urn:sbaudit:problem:too-large",
            "title": "Content Too Large",
            "status": 413,
            "detail": f"the request body exceeds {self.max_bytes} bytes",
            "instance": scope.get("path", ""),
        }
        payload = json.dumps(problem).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(first_message: Message) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return first_message
        return {"type": "http.disconnect"}

    return receive
