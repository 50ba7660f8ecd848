"""Run the upload validator program on one upload, in its sandbox, without holding a thread.

The program is what the server was wired with (``create_app(upload_validator=...)``: sbserver passes
``python -I .../sbengine/uploads/__main__.py``); a server built without one answers 503 to uploads.

The API never imports torch; reading tensors and arrays happens in a fresh interpreter started in the
sandbox (service/uploads/sandbox.py: minimal environment, no inherited descriptors, a private working
directory holding only the upload, a lower CPU priority, and as root no network and an unprivileged user),
which limits its own address space, CPU time and output file size before it imports anything heavy, runs
single-threaded, and is killed at ``SBAUDIT_UPLOAD_CHECK_TIMEOUT_SECONDS``.

At most ``SBAUDIT_UPLOAD_CHECK_CONCURRENCY`` run at once per API process; an upload that finds them all busy
gets 503 at once, with a Retry-After of about one validation (waiting would hold the request, and with it a
slow client's connection, for nothing). The process is awaited on the event loop, so a running validation
holds none of the worker threads the synchronous routes share. The request and the answer are one JSON
document each way (stdin / the last stdout line); nothing the client sent is ever executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from service.errors import Problem
from service.settings import Settings
from service.uploads import sandbox
from service.uploads.rejected import Rejected
from service.uploads.stream import FILE_NAME

log = logging.getLogger("sbaudit.api")

# Written files may grow 4x (uint8 images stored as float32 arrays, fp16 weights stored as fp32).
OUTPUT_GROWTH = 4
# What a busy server tells the client to wait: about one validation, as long as this process's recent ones
# took (a moving average; checkpoints take seconds, as the program imports torch, small datasets less).
_validation_seconds = 5.0

_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slots_for(settings: Settings) -> threading.BoundedSemaphore:
    """One pool of validator slots per process (and concurrency setting); taken without waiting."""
    with _slots_lock:
        key = settings.upload_check_concurrency
        if key not in _slots:
            _slots[key] = threading.BoundedSemaphore(key)
        return _slots[key]


def _took(seconds: float) -> None:
    global _validation_seconds
    _validation_seconds += 0.2 * (seconds - _validation_seconds)


def retry_after_seconds() -> int:
    """The Retry-After of a 503 when every validator is busy: about one validation, at least a second."""
    return max(1, math.ceil(_validation_seconds))


def _tail(stderr: str) -> str:
    return " | ".join(stderr.strip().splitlines()[-5:])[-1500:]


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL to the validator's process group (it leads its own session), whether or not it still runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _run(
    program: Sequence[str], request: dict[str, Any], settings: Settings, box: sandbox.Sandbox, field: str
) -> dict[str, Any]:
    timeout = settings.upload_check_timeout_seconds
    doing = "measuring the architecture" if request.get("kind") == "architecture" else "validating the file"
    limits = {
        "memory_bytes": settings.upload_check_memory_bytes,
        "cpu_seconds": int(timeout) + 5,
        "file_bytes": OUTPUT_GROWTH * settings.max_upload_bytes + (64 << 20),
    }
    payload = json.dumps({**request, "path": FILE_NAME, "limits": limits}).encode()
    try:
        proc = await asyncio.create_subprocess_exec(
            *program,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=box.directory,
            env=sandbox.environment(box.directory),
            close_fds=True,
            pass_fds=(),
            start_new_session=True,
            preexec_fn=box.confinement,  # noqa: PLW1509 - system calls only (sandbox.Confinement)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise sandbox.unavailable(f"{program[0]}: {exc}") from None
    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            out, err = await proc.communicate(payload)
    except TimeoutError:
        raise Rejected(
            f"{doing} took longer than this server allows ({timeout:g} s, "
            "SBAUDIT_UPLOAD_CHECK_TIMEOUT_SECONDS)",
            field=field,
        ) from None
    finally:
        _kill(proc)  # timed out, the request was cancelled (the client went away), or what it left running
        with anyio.CancelScope(shield=True):
            await proc.wait()
        _took(time.monotonic() - started)
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        answer = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        log.warning("upload validator exited with %s: %s", proc.returncode, _tail(stderr))
        raise Rejected(
            f"{doing} did not finish within this server's limits (the validator process ended abnormally, "
            f"exit status {proc.returncode})",
            field=field,
        )
    if stderr.strip():
        level = logging.WARNING if int(answer.get("status") or 0) >= 500 else logging.INFO
        log.log(level, "upload validator: %s", _tail(stderr))
    return answer


@asynccontextmanager
async def validated(
    request: dict[str, Any],
    *,
    upload: Path | None,
    program: Sequence[str] | None,
    settings: Settings,
    field: str = "body.file",
) -> AsyncIterator[tuple[dict[str, Any], Path]]:
    """Run the validator on the file ``upload`` (moved into a sandbox; ``None`` for a request that reads no
    file) with ``request``, whose output paths are relative to the sandbox's directory. Yields the answer,
    when the validator accepted the request, and that directory, which is removed on leaving. Raises
    :class:`Rejected` (client errors) or :class:`Problem` 503 (no validator program, one that cannot start,
    or every validator slot busy). ``field`` is what a rejection the program did not explain (a timeout, a
    crash) is laid on."""
    if not program:
        raise Problem(503, "this server was started without an upload validator", slug="no-validator")
    slots = _slots_for(settings)
    if not slots.acquire(blocking=False):
        wait = retry_after_seconds()
        raise Problem(
            503,
            f"all {settings.upload_check_concurrency} upload validators of this server are busy "
            f"(SBAUDIT_UPLOAD_CHECK_CONCURRENCY); retry in {wait} s",
            slug="busy",
            headers={"Retry-After": str(wait)},
        )
    box = None
    try:
        try:
            box = await anyio.to_thread.run_sync(sandbox.Sandbox.enter, upload, settings, program[0])
            answer = await _run(program, request, settings, box, field)
        finally:
            slots.release()
        if not answer.get("ok"):
            raise Rejected(
                answer.get("detail") or "the file was refused",
                status=int(answer.get("status", 422)),
                field=answer.get("field") or field,
                **(answer.get("extra") or {}),
            )
        await anyio.to_thread.run_sync(box.claim_outputs)
        yield answer, box.directory
    finally:
        if box is not None:
            with anyio.CancelScope(shield=True):  # also when the request is cancelled (server shutdown)
                await anyio.to_thread.run_sync(box.remove)
