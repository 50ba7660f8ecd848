"""A real MLflow tracking server for the tests (never a mock): ``mlflow server`` in a subprocess, with a
SQLite backend file and a local artifact destination in a temporary directory, on a free port.

Tests that need it skip, saying why, when mlflow is not installed (pip install -e '.[dev]'), unless CI is
set: then they fail, like the PostgreSQL and Chromium tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_SECONDS = 180  # a first start creates its SQLite schema: ~30 s on a busy 2-core machine


def require_mlflow() -> None:
    try:
        import mlflow.server  # noqa: F401  (the full package: the tracking server, not only mlflow-skinny)
    except ImportError:
        message = "the MLflow tests need the mlflow package (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(tmp: Path) -> Iterator[str]:
    """Start ``mlflow server`` under ``tmp``; yields its tracking URI once /health answers."""
    require_mlflow()
    port = _free_port()
    log_path = tmp / "mlflow-server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(tmp / "mlflow-artifacts")]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"mlflow server did not come up at {uri}:\n{output}")
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
