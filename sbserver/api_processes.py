"""``sbaudit serve`` with SBAUDIT_API_WORKERS > 1: that many uvicorn servers, each accepting connections on a
listening socket of its own bound with SO_REUSEPORT, so the kernel spreads new connections evenly over them.

uvicorn's own multi-process mode shares one listening socket: every idle process is woken by a connection
and the first to run accepts all that are waiting, so a burst of clients (16 keep-alive connections opened
at once) often landed on one process while the other idled, halving throughput for as long as they stayed
connected (BENCHMARKS.md). The parent only supervises: it holds the port (bound, not listening, so it
never receives a connection), restarts a process that dies, and on SIGINT or SIGTERM asks each to shut
down gracefully and waits for them.

Their Prometheus figures are shared: the parent gives them one PROMETHEUS_MULTIPROC_DIR (the operator's,
emptied at start, or a private temporary one), so /metrics counts the requests of every process
(service/metrics.py).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uvicorn.config import STARTUP_FAILURE

from service.metrics import MULTIPROCESS_DIR_ENV

log = logging.getLogger("sbaudit.serve")

_SUPERVISE_SECONDS = 0.5


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _serve_one(options: dict[str, Any]) -> None:
    """One API process (spawned): its own listening socket, then uvicorn with the app from the environment."""
    import uvicorn

    sock = _bind(options["host"], options["port"])
    config = uvicorn.Config("sbserver.asgi:create_app_from_env", factory=True, **options)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """The directory the API processes write their Prometheus figures to, in the environment they inherit:
    PROMETHEUS_MULTIPROC_DIR when set (emptied of an earlier run's files first), else a temporary directory
    removed at the end."""
    given = os.environ.get(MULTIPROCESS_DIR_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="sbaudit-metrics-"))
    os.environ[MULTIPROCESS_DIR_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def serve(options: dict[str, Any], processes: int, *, grace_seconds: float) -> int:
    """Run ``processes`` API processes until SIGINT or SIGTERM; the exit status of ``sbaudit serve``."""
    with shared_metrics_dir():
        return _serve(options, processes, grace_seconds=grace_seconds)


def _serve(options: dict[str, Any], processes: int, *, grace_seconds: float) -> int:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: they inherit only the environment
    holder = _bind(options["host"], options["port"])  # the port stays ours while a process restarts
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_serve_one, args=(options,), name="sbaudit-api")
        process.start()
        return process

    status = 0
    running = [start() for _ in range(processes)]
    try:
        while not stopping.wait(_SUPERVISE_SECONDS):
            for index, process in enumerate(running):
                if process.is_alive():
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("an API process could not start (see above); stopping")
                    status = STARTUP_FAILURE
                    stopping.set()
                    break
                log.warning("API process %s exited (%s); starting another", process.pid, process.exitcode)
                running[index] = start()
    finally:
        for process in running:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)  # uvicorn: finish open requests, then stop
        for process in running:
            process.join(timeout=grace_seconds + 10)
            if process.is_alive():
                process.kill()
                process.join()
        holder.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
