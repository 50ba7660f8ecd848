"""Run the upload validator program in a separate, resource-limited process.

The program is what the server was wired with (``create_app(upload_validator=...)``: sbserver passes
``python -m sbengine.uploads``); a server built without one answers 503 to uploads.

The API never imports torch; reading tensors and arrays happens in a fresh interpreter that limits its own
address space, CPU time and output file size before it imports anything heavy, runs single-threaded, and
is killed at ``SBAUDIT_UPLOAD_CHECK_TIMEOUT_SECONDS``. At most ``SBAUDIT_UPLOAD_CHECK_CONCURRENCY`` run at
once; further uploads wait for a slot (503 when none frees up in time). The request and the answer are one
JSON document each way (stdin / the last stdout line); nothing the client sent is ever executed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from service.errors import Problem
from service.settings import Settings
from service.uploads.rejected import Rejected

log = logging.getLogger("sbaudit.api")

# The directory holding the repository's packages: a validator run from a source tree imports them from there.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
# Written files may grow 4x (uint8 images stored as float32 arrays, fp16 weights stored as fp32).
OUTPUT_GROWTH = 4

_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slots_for(settings: Settings) -> threading.BoundedSemaphore:
    """One pool of validator slots per process (and concurrency setting)."""
    with _slots_lock:
        key = settings.upload_check_concurrency
        if key not in _slots:
            _slots[key] = threading.BoundedSemaphore(key)
        return _slots[key]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
    path = env.get("PYTHONPATH")
    env.update(
        PYTHONPATH=f"{SOURCE_ROOT}{os.pathsep}{path}" if path else str(SOURCE_ROOT),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MALLOC_ARENA_MAX="2",
        CUDA_VISIBLE_DEVICES="",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(program: Sequence[str], request: dict[str, Any], settings: Settings, workdir: Path) -> dict[str, Any]:
    timeout = settings.upload_check_timeout_seconds
    limits = {
        "memory_bytes": settings.upload_check_memory_bytes,
        "cpu_seconds": int(timeout) + 5,
        "file_bytes": OUTPUT_GROWTH * settings.max_upload_bytes + (64 << 20),
    }
    payload = json.dumps({**request, "limits": limits})
    try:
        proc = subprocess.run(
            list(program),
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=workdir,
            env=_environment(),
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise Rejected(
            f"validating the file took longer than this server allows ({timeout:g} s, "
            "SBAUDIT_UPLOAD_CHECK_TIMEOUT_SECONDS)"
        ) from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-5:])[-1500:]
        log.warning("upload validator exited with %s: %s", proc.returncode, tail)
        raise Rejected(
            "the file could not be validated within this server's limits (the validator process ended "
            f"abnormally, exit status {proc.returncode})"
        )
    answer: dict[str, Any] = json.loads(lines[-1])
    if proc.stderr.strip():
        level = logging.WARNING if int(answer.get("status") or 0) >= 500 else logging.INFO
        log.log(level, "upload validator: %s", " | ".join(proc.stderr.strip().splitlines()[-5:])[-1500:])
    return answer


async def validate(
    request: dict[str, Any], *, program: Sequence[str] | None, settings: Settings, workdir: Path
) -> dict[str, Any]:
    """The validator's answer for ``request`` when it accepted the file; raises :class:`Rejected` (client
    errors) or :class:`Problem` 503 (no validator program, or no validator slot freed up in time)."""
    if not program:
        raise Problem(503, "this server was started without an upload validator", slug="no-validator")
    slots = _slots_for(settings)
    acquired = await anyio.to_thread.run_sync(slots.acquire, True, settings.upload_check_timeout_seconds)
    if not acquired:
        raise Problem(
            503,
            "the server is busy validating other uploads; retry shortly",
            slug="busy",
            headers={"Retry-After": "30"},
        )
    try:
        answer = await anyio.to_thread.run_sync(_run, program, request, settings, workdir)
    finally:
        slots.release()
    if not answer.get("ok"):
        raise Rejected(
            answer.get("detail") or "the file was refused",
            status=int(answer.get("status", 422)),
            field=answer.get("field") or "body.file",
            **(answer.get("extra") or {}),
        )
    return answer
