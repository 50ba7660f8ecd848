"""Servers for the job-containment tests (memory limit, prompt cancel): real ``sbaudit serve`` processes in
embedded mode, and in scaled mode an API + one ``sbaudit worker`` on a private PostgreSQL database and a
private ``redis-server`` (so no other test session's worker takes these jobs). Built from the end-to-end
helpers in tests/e2e."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_support import PG_ADMIN_URL, Server, private_database, require_server, start_server  # noqa: E402
from faults_support import PrivateRedis  # noqa: E402

MODES = ["embedded", "scaled"]


@contextlib.contextmanager
def running_server(mode: str, tmp: Path, **env: str) -> Iterator[Server]:
    """``sbaudit serve`` (embedded: one local worker; scaled: with one ``sbaudit worker``) with ``env``."""
    if mode == "embedded":
        server = start_server(tmp, SBAUDIT_WORKERS="1", **env)
        try:
            yield server
        finally:
            server.proc.stop()
        return
    require_server("PostgreSQL", PG_ADMIN_URL, 5432)
    redis = PrivateRedis(tmp)
    redis.start()
    try:
        with private_database() as url:
            server = start_server(tmp, SBAUDIT_DATABASE_URL=url, SBAUDIT_BROKER_URL=redis.url, **env)
            try:
                server.start_worker(tmp)
                yield server
            finally:
                for worker in server.workers:
                    worker.stop()
                server.proc.stop()
    finally:
        redis.kill()


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


@dataclass
class ReadyzWatch:
    """Polls GET /readyz from a thread while something happens; every answer must be a 200."""

    base_url: str
    answers: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ReadyzWatch:
        self._thread = threading.Thread(target=self._run, name="readyz-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    self.answers.append(str(client.get("/readyz").status_code))
                except httpx.HTTPError as exc:
                    self.answers.append(type(exc).__name__)
                self._stop.wait(0.1)
