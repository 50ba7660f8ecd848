"""End-to-end helpers: real ``sbaudit serve`` / ``sbaudit worker`` subprocesses, and for the scaled mode a
fresh PostgreSQL database and a Redis database number per test session.

PostgreSQL and Redis tests skip (with the reason) only when the servers are unreachable *and* CI is not
set; on CI an unreachable server fails the run. Override the servers with TEST_POSTGRES_URL (an admin
connection, default postgresql://postgres@127.0.0.1:5432/test) and TEST_REDIS_URL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from upload_testing import validator_user_env

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")

# Fast failure detection and fine-grained progress for tests; tiny workloads keep jobs short.
FAST_JOB_ENV = {
    "SBAUDIT_DEVICE": "cpu",
    "SBAUDIT_JOB_LEASE_SECONDS": "5",
    "SBAUDIT_REAPER_INTERVAL_SECONDS": "1",
    "SBAUDIT_PROGRESS_INTERVAL_SECONDS": "0.2",
    "SBAUDIT_POLL_INTERVAL_SECONDS": "0.2",
    "SBAUDIT_CHECKPOINT_EVERY_UPDATES": "25",
    "SBAUDIT_ACCESS_LOG": "false",
    "OMP_NUM_THREADS": "1",
}


def sbaudit_command() -> list[str]:
    script = Path(sys.executable).with_name("sbaudit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sbclient.cli"]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
    env.update(FAST_JOB_ENV)
    env.update(validator_user_env())
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, url: str, default_port: int) -> None:
    if reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set: the scaled-mode tests must run on CI")
    pytest.skip(f"{message} (set CI=1 to make this a failure)")


@dataclass
class Proc:
    """A subprocess in its own process group, with its output in a log file."""

    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"process exited ({self.process.returncode}):\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} after {timeout}s:\n{self.output()[-3000:]}")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill_group()


def start(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> Proc:
    handle = open(log, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    process = subprocess.Popen(
        sbaudit_command() + args,
        env=env,
        cwd=cwd,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()
    return Proc(process, log)


@dataclass
class Server:
    proc: Proc
    base_url: str
    key: str
    data_dir: Path
    env: dict[str, str]
    workers: list[Proc] = field(default_factory=list)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=90
        )

    def start_worker(self, tmp: Path) -> Proc:
        worker = start(["worker"], self.env, tmp / f"worker-{len(self.workers)}.log", tmp)
        worker.wait_for_output("ready.", timeout=90)
        self.workers.append(worker)
        return worker


def start_server(tmp: Path, **env_extra: str) -> Server:
    data_dir = tmp / "data"
    port = free_port()
    env = base_env(SBAUDIT_DATA_DIR=str(data_dir), **env_extra)
    proc = start(["serve", "--port", str(port)], env, tmp / "serve.log", tmp)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.process.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(f"sbaudit serve did not become ready:\n{proc.output()[-3000:]}")
        time.sleep(0.2)
    key = (data_dir / "admin-key").read_text().strip()
    return Server(proc, base_url, key, data_dir, env)


def wait_for_job(client: httpx.Client, job_id: str, *, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
        if job["state"] in ("succeeded", "failed", "canceled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s: {job}")


@contextlib.contextmanager
def private_database():
    """A fresh database on the shared server, dropped afterwards; yields its SQLAlchemy URL."""
    import psycopg

    require_server("PostgreSQL", PG_ADMIN_URL, 5432)
    name = f"sbaudit_test_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(PG_ADMIN_URL)._replace(scheme="postgresql+psycopg", path=f"/{name}").geturl()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
