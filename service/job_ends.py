"""Wakes the requests that wait for a job (``GET /v1/jobs/{id}?wait=``, the event stream) when it ends.

Those requests read the job from the database, which stays the only source of truth; between reads they
sleep. Where the executor runs in the API's own process (embedded mode, worker/local.py) it calls
:meth:`JobEnds.notify` from its thread as soon as a job's process has ended (it has recorded the result by
then), and the sleeping requests for that job read it again at once instead of at their next interval.
Elsewhere (scaled mode: jobs end in other processes and hosts) nobody notifies and the interval is all
there is; a notification is only ever a shortcut.

A job that ends between a waiter's read and its :meth:`JobEnds.sleep` is noticed at the end of that sleep,
as without notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import anyio


class JobEnds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, job_id: str) -> None:
        """The job's process has ended: wake whoever sleeps on it. Safe from any thread."""
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting there
                loop.call_soon_threadsafe(event.set)

    async def sleep(self, job_id: str, seconds: float) -> None:
        """Sleep up to ``seconds``, or until the job ends, whichever comes first."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            with anyio.move_on_after(max(0.0, seconds)):
                await waiter[1].wait()
        finally:
            with self._lock:
                waiters = self._waiters.get(job_id)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[job_id]

    def waiting(self) -> int:
        """How many sleeps are registered now (for tests and metrics)."""
        with self._lock:
            return sum(len(waiters) for waiters in self._waiters.values())
