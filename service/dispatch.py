"""How the API hands a committed job to whoever runs it.

The API only needs ``dispatch(job_id)``; the concrete executor (the local poller, or Celery) lives in
worker/ and is passed to ``create_app`` by ``sbaudit serve``. Dispatch is a wake-up call, not the source of
truth: the job row is already committed as ``queued``, so a lost dispatch delays a job but never loses it.
"""

from __future__ import annotations

from typing import Protocol


class Executor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def drain(self) -> None:
        """Start no more jobs: a shutdown signal arrived, and :meth:`stop` follows once requests finish."""

    def dispatch(self, job_id: str) -> None:
        """Hand on a committed job. Called on the event loop: it must not block (queue it, wake a thread)."""

    def ready(self) -> str | None:
        """None when healthy, else why not (reported by /readyz)."""


class NoExecutor:
    """For an API process whose jobs are run elsewhere (or by nobody, in unit tests)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def dispatch(self, job_id: str) -> None:
        pass

    def ready(self) -> str | None:
        return None
