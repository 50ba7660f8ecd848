"""Fault injection for the end-to-end tests: a private Redis to kill, a TCP proxy in front of PostgreSQL to
cut, a client that keeps polling during a fault, and the "exactly once, nothing left behind" checks.

The machine's shared Redis and PostgreSQL are never restarted: the Redis here is a ``redis-server`` of our
own (no persistence, like a restart of our compose config would lose its queue), and a PostgreSQL
"restart" is the proxy dropping every connection and refusing new ones for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from e2e_support import Proc, Server, free_port, start

# --- Redis -----------------------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` subprocess on a free port that a test may SIGKILL and start again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket_to(self.port):
                return
            time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def socket_to(port: int):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        yield sock


# --- PostgreSQL ------------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and refuses new ones until
    :meth:`restore`, which is what clients of a restarting database server see."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pg-proxy", daemon=True)

    def via(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        userinfo = f"{netloc[0]}@" if len(netloc) == 2 else ""
        return parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}").geturl()

    def start(self) -> None:
        self._thread.start()
        self.restore()

    def _run(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def restore(self) -> None:
        self._run(self._listen())

    def cut(self) -> None:
        self._run(self._cut())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


# --- what clients see ------------------------------------------------------------------------------------


@dataclass
class Poller:
    """Polls GET /v1/jobs/{id} and GET /healthz from a thread while a fault happens. Everything a client may
    see then is a 2xx, a 503 problem+json, or a connection error: never a 500, never another 5xx."""

    base_url: str
    key: str
    job_id: str
    seen: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Poller:
        self._thread = threading.Thread(target=self._run, name="fault-poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self.bad, f"responses a client must never see during a fault: {self.bad[:5]}"
        assert self.seen, "the poller made no requests"

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
            while not self._stop.is_set():
                for path in (f"/v1/jobs/{self.job_id}", "/healthz"):
                    self._check(client, path)
                self._stop.wait(0.1)

    def _check(self, client: httpx.Client, path: str) -> None:
        try:
            response = client.get(path)
        except httpx.TransportError as exc:
            self.seen.append(f"{path} {type(exc).__name__}")
            return
        self.seen.append(f"{path} {response.status_code}")
        if response.is_success:
            return
        problem_json = response.headers.get("content-type", "").startswith("application/problem+json")
        if response.status_code == 503 and problem_json and "Traceback" not in response.text:
            if path != "/healthz" and "retry-after" not in response.headers:
                self.bad.append(f"{path} 503 without Retry-After")
            return
        self.bad.append(f"{path} {response.status_code} {response.text[:200]}")

    def statuses(self, path_prefix: str) -> set[str]:
        return {s.split(" ", 1)[1] for s in self.seen if s.startswith(path_prefix)}


# --- exactly once, nothing left behind -------------------------------------------------------------------


def assert_recorded_once(
    client: httpx.Client, kind: str, resource: dict, expected_kinds: list[str] | None = None
) -> dict:
    """One resource row for the job and one artifact row per kind."""
    final = client.get(f"/v1/{kind}/{resource['id']}").json()
    assert final["status"] == "ready", final
    kinds = sorted(a["kind"] for a in final["artifacts"])
    assert kinds and len(kinds) == len(set(kinds)), f"one artifact row per kind: {kinds}"
    if expected_kinds is not None:
        assert kinds == sorted(expected_kinds), kinds
    listed = [r for r in client.get(f"/v1/{kind}", params={"limit": 200}).json()["data"]
              if r.get("job_id") == resource["job_id"]]  # fmt: skip
    assert [r["id"] for r in listed] == [resource["id"]], "exactly one resource for the job"
    return final


def stored_blobs(data_dir: Path) -> set[str]:
    root = data_dir / "artifacts"
    return {p.name for p in root.glob("??/*") if p.is_file() and not p.name.startswith(".")}


def referenced_blobs(client: httpx.Client) -> set[str]:
    shas = set()
    for kind in ("datasets", "models", "audits"):
        for resource in client.get(f"/v1/{kind}", params={"limit": 200}).json()["data"]:
            shas.update(a["sha256"] for a in resource.get("artifacts") or [])
    return shas


def assert_nothing_left_behind(server: Server, client: httpx.Client, job_id: str) -> None:
    """Every blob in the store is referenced by an artifact row; the job left no scratch dir, checkpoint or
    blob ledger."""
    orphans = stored_blobs(server.data_dir) - referenced_blobs(client)
    assert not orphans, f"blobs no artifact row references: {sorted(orphans)}"
    scratch = server.data_dir / "scratch"
    leftovers = [p.name for p in scratch.glob(f"{job_id}-*")] if scratch.exists() else []
    assert not leftovers, f"scratch dirs left by the job's attempts: {leftovers}"
    checkpoints = server.data_dir / "checkpoints"
    assert not list(checkpoints.glob(f"{job_id}.*")), "checkpoint or blob ledger left behind"


def wait_for_file(path: Path, timeout: float, *, watch: Proc | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if watch is not None and watch.process.poll() is not None:
            raise AssertionError(f"process exited before {path.name} appeared:\n{watch.output()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def restart_api(server: Server, tmp: Path) -> Server:
    """Stop the API (SIGTERM) and start it again on the same port with the same settings."""
    server.proc.stop()
    port = urlsplit(server.base_url).port
    server.proc = start(["serve", "--port", str(port)], server.env, tmp / "serve-restarted.log", tmp)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return server
        assert server.proc.process.poll() is None, server.proc.output()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"the API did not come back:\n{server.proc.output()[-3000:]}")


def job_log(server: Server) -> str:
    return "\n".join([server.proc.output(), *(w.output() for w in server.workers)])


def dumps(value) -> str:
    return json.dumps(value, indent=1, default=str)[:3000]
