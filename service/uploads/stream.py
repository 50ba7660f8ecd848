"""Receive a multipart/form-data upload without holding it in memory.

The file part streams into ``<data dir>/uploads/<random>/upload`` while its bytes are counted and hashed;
the moment the count passes SBAUDIT_MAX_UPLOAD_BYTES the request is refused (413) and the directory
removed; likewise (507) when it passes what the owner's storage quota has room for. Text parts (the
architecture, the blocks, ...) are small, bounded by SBAUDIT_MAX_JSON_BYTES together. The client's file name
is kept only to be checked (``rejected.check_filename``); the path on disk is derived by the server.
Whatever goes wrong, the directory is gone when the request ends: the caller owns a
:class:`ReceivedUpload` and calls ``cleanup()`` in a ``finally``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from io import BufferedWriter
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from service.errors import Problem
from service.quota import Room, quota_exceeded
from service.settings import Settings
from service.uploads.rejected import Rejected, check_filename

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("sbaudit.api")

FILE_NAME = "upload"
MAX_PARTS = 16
_FLUSH_BYTES = 1 << 20
# Leftovers of a server that died mid-request are removed by the next upload after this long.
STALE_SECONDS = 24 * 3600.0


def too_large(limit: int) -> Problem:
    return Problem(
        413,
        f"the uploaded file exceeds this server's limit of {limit} bytes (SBAUDIT_MAX_UPLOAD_BYTES)",
        slug="too-large",
        title="Content Too Large",
        headers={"Connection": "close"},
    )


@dataclass
class ReceivedUpload:
    directory: Path
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    filename: str | None = None
    size: int = 0
    sha256: str = ""
    room: Room | None = None  # the owner's room under the storage quota, when there is one

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class _TooLarge(Exception):
    pass


class _OverQuota(Exception):
    pass


class _Receiver:
    """python-multipart callbacks: route each part to the file or to a bounded text buffer."""

    def __init__(
        self,
        upload: ReceivedUpload,
        *,
        file_field: str,
        text_fields: tuple[str, ...],
        settings: Settings,
        room: Room | None = None,
    ) -> None:
        self.upload = upload
        self.file_field, self.text_fields = file_field, text_fields
        self.max_file = settings.max_upload_bytes
        self.room = room
        self.max_text = settings.max_json_bytes
        self.text_total = 0
        self.parts = 0
        self.ended = False
        self.digest = hashlib.sha256()
        self.fh: BufferedWriter | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._current: str | None = None
        self._text = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise Rejected(f"too many form parts (at most {MAX_PARTS})", status=400, field="body")
        self._disposition = b""
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise Rejected("a form part has no name (Content-Disposition: form-data; name=...)", field="body")
        name = raw_name.decode("utf-8", "replace")
        if name == self.file_field:
            if self.upload.file_path is not None:
                raise Rejected(f"send one '{self.file_field}' part only", field=f"body.{self.file_field}")
            filename = options.get(b"filename")
            self.upload.filename = filename.decode("utf-8", "replace") if filename is not None else None
            check_filename(self.upload.filename)
            self.upload.file_path = self.upload.directory / FILE_NAME
            self.fh = open(self.upload.file_path, "xb")  # noqa: SIM115 - closed by finish()/close()
        elif name in self.text_fields:
            if name in self.upload.fields:
                raise Rejected(f"the form field {name!r} is given twice", field=f"body.{name}")
        else:
            allowed = ", ".join((self.file_field, *self.text_fields))
            raise Rejected(
                f"unknown form field {name[:60]!r} (allowed: {allowed})", field=f"body.{name[:60]}"
            )
        self._current = name
        self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._current == self.file_field:
            self.upload.size += n
            if self.upload.size > self.max_file:
                raise _TooLarge
            if self.room is not None and self.upload.size > self.room.left:
                raise _OverQuota
            self.pending.append(bytes(data[start:end]))
            self.pending_size += n
        else:
            self.text_total += n
            if self.text_total > self.max_text:
                raise Rejected(
                    f"the form's text fields exceed {self.max_text} bytes (SBAUDIT_MAX_JSON_BYTES)",
                    status=413,
                    field=f"body.{self._current}",
                )
            self._text += data[start:end]

    def on_part_end(self) -> None:
        if self._current != self.file_field and self._current is not None:
            try:
                self.upload.fields[self._current] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected("must be UTF-8 text", field=f"body.{self._current}") from None
        self._current = None

    def on_end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        """Write the pending file bytes (called from a worker thread: disk I/O stays off the event loop)."""
        chunks, self.pending, self.pending_size = self.pending, [], 0
        for chunk in chunks:
            self.digest.update(chunk)
            assert self.fh is not None  # pending holds bytes of the file part only, whose file is open
            self.fh.write(chunk)

    def close(self) -> None:
        if self.fh is not None and not self.fh.closed:
            self.fh.close()


def sweep_stale(root: Path) -> None:
    """Remove the directories under ``root`` (uploads, validators' sandboxes) that a crashed server left
    behind (the request that owned them is long gone)."""
    cutoff = time.time() - STALE_SECONDS
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("removed a stale upload directory %s", entry.name)
        except FileNotFoundError:
            continue


async def receive_upload(
    request: Request,
    *,
    settings: Settings,
    file_field: str,
    text_fields: tuple[str, ...],
    room: Room | None = None,
) -> ReceivedUpload:
    """Stream the request's multipart body: the ``file_field`` part to disk (counted, hashed), the
    ``text_fields`` into memory. Raises :class:`Problem` (400/413/415/422, 507 when the file outgrows the
    owner's ``room`` under their storage quota) with nothing left on disk."""
    content_type = request.headers.get("content-type", "")
    _, params = parse_options_header(content_type)
    if not content_type.lower().startswith("multipart/form-data") or not params.get(b"boundary"):
        raise Problem(
            415,
            "send the upload as multipart/form-data (curl -F file=@model.safetensors -F ...)",
            slug="unsupported-media-type",
        )
    declared = request.headers.get("content-length")
    ceiling = settings.max_upload_bytes + settings.max_json_bytes + (64 << 10)
    if declared is not None and (not declared.isdigit() or int(declared) > ceiling):
        raise too_large(settings.max_upload_bytes)

    root = settings.uploads_dir
    root.mkdir(parents=True, exist_ok=True)
    await anyio.to_thread.run_sync(sweep_stale, root)
    upload = ReceivedUpload(directory=root / secrets.token_hex(12), room=room)
    upload.directory.mkdir(mode=0o700)
    receiver = _Receiver(upload, file_field=file_field, text_fields=text_fields, settings=settings, room=room)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            parser.write(chunk)
            if receiver.pending_size >= _FLUSH_BYTES:
                await anyio.to_thread.run_sync(receiver.flush)
        parser.finalize()
        if not receiver.ended:
            raise Problem(400, "the multipart body ended before its closing boundary", slug="bad-multipart")
        if receiver.fh is not None:
            await anyio.to_thread.run_sync(receiver.flush)
        receiver.close()
        upload.sha256 = receiver.digest.hexdigest()
        if upload.file_path is None:
            raise Problem(
                422,
                f"body.{file_field}: the form has no '{file_field}' part",
                slug="validation",
                title="Request validation failed",
                errors=[{"field": f"body.{file_field}", "message": "a file is required"}],
            )
        return upload
    except BaseException as exc:
        receiver.close()
        upload.cleanup()
        if isinstance(exc, _TooLarge):
            raise too_large(settings.max_upload_bytes) from None
        if isinstance(exc, _OverQuota):
            assert room is not None  # raised only when the file outgrows the room
            problem = quota_exceeded(used=room.used, quota=room.quota, adding=upload.size)
            problem.headers = {"Connection": "close"}  # the client is still sending: stop it
            raise problem from None
        if isinstance(exc, Rejected):
            raise as_problem(exc) from None
        if isinstance(exc, FormParserError):
            raise Problem(400, f"malformed multipart body: {exc}", slug="bad-multipart") from None
        if isinstance(exc, ClientDisconnect):
            raise Problem(400, "the client disconnected during the upload", slug="bad-multipart") from None
        raise


def as_problem(exc: Rejected) -> Problem:
    """A :class:`Rejected` as the problem response the API sends (422s name their field)."""
    if exc.status == 422:
        return Problem(
            422,
            f"{exc.field}: {exc.detail}",
            slug="validation",
            title="Request validation failed",
            errors=[{"field": exc.field, "message": exc.detail}],
            **exc.extra,
        )
    slug = {413: "too-large", 400: "bad-multipart", 503: "validator-unavailable"}.get(exc.status, "rejected")
    title = "Content Too Large" if exc.status == 413 else None
    return Problem(exc.status, exc.detail, slug=slug, title=title, field=exc.field, **exc.extra)
