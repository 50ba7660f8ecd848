"""Riding out a database outage in the job process instead of losing the job's work to it.

A PostgreSQL restart or failover drops every connection for a few seconds. The heartbeat already retries
on its next beat; the writes that end a job (record the results, fail, cancel, release) are retried here
with backoff. Retrying them is safe: each is a compare-and-set on the job this worker holds, so if the
lease ran out meanwhile and another attempt took the job, the retry finds it gone and records nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from service.db import DATABASE_UNAVAILABLE

log = logging.getLogger("sbaudit.worker")

T = TypeVar("T")

# Long enough for a database restart or failover; after that the attempt gives up and the reaper decides.
RETRY_SECONDS = 120.0


def retry_while_unavailable(fn: Callable[[], T], *, what: str, seconds: float = RETRY_SECONDS) -> T:
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return fn()
        except DATABASE_UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            log.warning("%s: database unavailable (%s); retrying in %.1fs", what, first_line, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
