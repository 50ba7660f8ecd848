"""Load on a running API from a second process on loopback: GET job, GET list, POST dataset.

Each scenario runs for ``--duration`` seconds with ``--clients`` concurrent keep-alive connections (a list:
``1,16,64``) and reports requests/s and p50/p99 latency (client-side, full round trip). ``--queued N`` then
queues N more jobs and measures GET job again: the p50 ratio shows whether a long queue slows the hot path.
Prints one JSON line on stdout, a table on stderr.

    # against a server you started with `make serve` (key from ./sbaudit-data/admin-key):
    .venv/bin/python bench/api_load.py --url http://127.0.0.1:8000
    # a throw-away embedded server (SQLite, jobs run in the same process's executor, on the same cores):
    .venv/bin/python bench/api_load.py --start-server embedded --clients 1,16,64
    # a throw-away scaled server (PostgreSQL + Redis, 2 uvicorn processes, no workers: jobs stay queued):
    .venv/bin/python bench/api_load.py --start-server scaled --api-workers 2 --clients 1,16,64 --queued 1000
    # CPU cost per request inside one process (no network, no concurrency; steadier on a busy machine):
    .venv/bin/python bench/api_load.py --in-process

``--scenarios slow_uploads`` instead measures GET job, and GET /v1/usage (a synchronous route, served from
the worker thread pool), first alone and then while ``--slow-uploads`` clients (40) upload over and over:
each trickles its multipart body over ``--upload-seconds`` (2) and, after a 503, waits its Retry-After
(``--ignore-retry-after``: sends again at once). ``--upload-kind model`` (default) uploads a small checkpoint,
whose validation imports torch (seconds of CPU); ``dataset`` an ``.npz`` of ``--upload-bytes``:

    .venv/bin/python bench/api_load.py --start-server embedded --scenarios slow_uploads --clients 4

Servers it starts, and the in-process app, have the per-key rate limits and the per-owner cap on active jobs
switched off (it drives one key far past them); against your own server (--url) set
SBAUDIT_RATE_LIMIT_PER_SECOND=0, SBAUDIT_JOB_RATE_LIMIT_PER_MINUTE=0 and SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER=0
there, or the numbers measure the 429s. The POST
scenario queues real dataset jobs; the script cancels the ones still queued when it ends.

It is over 400 lines because each scenario (modes, concurrency levels, queued jobs, slow uploads) starts
and measures its own server; the shared client loop and percentiles come first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

POST_BODY = {"preset": "LMS-5", "n_train": 100, "n_val": 0, "n_test": 100}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Connection:
    """One keep-alive HTTP/1.1 connection with the bare minimum of parsing.

    httpx's connection pool costs more CPU than the server under 16-way concurrency and would be what this
    benchmark measures; a raw stream per simulated client keeps the load generator cheap.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def scenario(
    name: str, make_request, *, url: str, key: str, clients: int, duration: float, warmup: float
) -> dict:
    parts = urlsplit(url)
    connections = [Connection(parts.hostname, parts.port or 80, key) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def one_client(i: int) -> None:
        nonlocal errors
        n = 0
        while (now := time.perf_counter()) < stop_at:
            status, _ = await make_request(connections[i], i, n)
            done = time.perf_counter()
            n += 1
            # Also a request from the warm-up that ends in the window: a request stalled across it counts.
            if done >= measure_from:
                errors += status >= 400
                latencies.append(done - now)

    try:
        await asyncio.gather(*(one_client(i) for i in range(clients)))
    finally:
        for connection in connections:
            await connection.close()
    latencies.sort()
    return {
        "scenario": name,
        "requests": len(latencies),
        "rps": round(len(latencies) / duration, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "errors": errors,
    }


@dataclass(frozen=True)
class UploadRequest:
    """One kind of upload: ``body(n)`` is the multipart body of the n-th (a model's declared normalization
    differs in each, so that none is answered from an earlier identical upload without validation)."""

    path: str
    fields: dict[str, str]
    filename: str
    data: bytes
    boundary: str = "benchslowupload"

    def body(self, n: int) -> bytes:
        fields = dict(self.fields)
        if self.path == "/v1/models/uploads":
            fields["normalization"] = json.dumps({"mean": [n * 1e-6], "std": [1.0]})
        text = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        file_head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{self.filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        return (text + file_head).encode() + self.data + f"\r\n--{self.boundary}--\r\n".encode()


def upload_request(kind: str, size: int) -> UploadRequest:
    """``dataset``: an ``.npz`` of about ``size`` bytes (rows of 16 float32 features, labels 0/1, two declared
    blocks): read with numpy, validated in a fraction of a second. ``model``: a small fcn checkpoint
    (safetensors): validating it imports torch, seconds of CPU."""
    import io

    import numpy as np

    if kind == "model":
        import torch
        from safetensors.torch import save

        from sbengine.models import build_model

        torch.manual_seed(0)
        model = build_model({"name": "fcn", "width": 20, "depth": 1}, input_shape=(50,), num_classes=2)
        data = save({k: v.contiguous() for k, v in model.state_dict().items()})
        fields = {"architecture": json.dumps({"name": "fcn", "width": 20, "depth": 1}), "input_shape": "50",
                  "num_classes": "2"}  # fmt: skip
        return UploadRequest("/v1/models/uploads", fields, "model.safetensors", data)
    rows = max(16, size // (16 * 4 + 8))
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(rows, 16)).astype(np.float32), y=rng.integers(0, 2, rows))
    blocks = json.dumps([{"name": "first", "indices": [0]}, {"name": "rest", "indices": list(range(1, 16))}])
    return UploadRequest("/v1/datasets/uploads", {"blocks": blocks}, "data.npz", buffer.getvalue())


async def slow_uploader(
    url: str,
    key: str,
    request: UploadRequest,
    first: int,
    seconds: float,
    honour_retry_after: bool,
    statuses: dict,
) -> None:
    """Upload over and over (bodies ``first``, ``first + 1``, ...), each body trickled over ``seconds`` in 20
    pieces (stopping once the server has answered); after a 503, wait its Retry-After first (unless told
    not to). Counts the answers' statuses (0: the connection broke without one). Runs until cancelled."""
    parts = urlsplit(url)
    pieces = 20
    for n in itertools.count(first):
        body = request.body(n)
        head = (
            f"POST {request.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={request.boundary}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        step = -(-len(body) // pieces)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        answer_task = asyncio.ensure_future(reader.read())
        try:
            writer.write(head)
            for start in range(0, len(body), step):
                if answer_task.done():
                    break
                writer.write(body[start : start + step])
                await writer.drain()
                await asyncio.sleep(seconds / pieces)
        except OSError:
            pass  # the server answered and closed the connection mid-body
        try:
            answer = await answer_task
        except OSError:
            answer = b""
        finally:
            writer.close()
        status = int(answer[9:12]) if answer.startswith(b"HTTP/1.1 ") else 0
        statuses[status] = statuses.get(status, 0) + 1
        retry_after = next(
            (line[12:].strip() for line in answer.split(b"\r\n") if line.lower().startswith(b"retry-after:")),
            b"",
        )
        if status == 503 and honour_retry_after and retry_after.isdigit():
            await asyncio.sleep(int(retry_after))


def run_uploaders(
    url: str,
    key: str,
    request: UploadRequest,
    seconds: float,
    honour_retry_after: bool,
    count: int,
    stop: Any,
    answers: Any,
) -> None:
    """``count`` slow uploaders until ``stop`` is set; their statuses go into ``answers``."""

    async def main() -> dict:
        statuses: dict[int, int] = {}
        tasks = [
            asyncio.create_task(
                slow_uploader(url, key, request, i * 1_000_000, seconds, honour_retry_after, statuses)
            )
            for i in range(count)
        ]
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return statuses

    answers.put(asyncio.run(main()))


async def slow_uploads_effect(
    url: str, key: str, job_id: str, clients: int, duration: float, warmup: float, args: argparse.Namespace
) -> dict:
    """GET job and GET usage at ``clients`` each, before and while ``args.slow_uploads`` clients trickle
    uploads in: p50/p99 of the GETs, and the uploads' answers."""

    async def get_job(conn, i, n):
        return await conn.request("GET", f"/v1/jobs/{job_id}")

    async def get_usage(conn, i, n):
        return await conn.request("GET", "/v1/usage")

    async def measure(label: str) -> list[dict]:
        both = await asyncio.gather(
            scenario(f"get_job_{label}", get_job, url=url, key=key, clients=clients, duration=duration,
                     warmup=warmup),
            scenario(f"usage_{label}", get_usage, url=url, key=key, clients=clients, duration=duration,
                     warmup=warmup),
        )  # fmt: skip
        return [{**r, "clients": clients} for r in both]

    before = await measure("before_uploads")
    # The uploaders run in a process of their own, so their trickling does not delay this one's GETs.
    context = multiprocessing.get_context("spawn")
    stop, answers = context.Event(), context.Queue()
    request = upload_request(args.upload_kind, args.upload_bytes)
    honour = not args.ignore_retry_after
    uploaders = context.Process(
        target=run_uploaders,
        args=(url, key, request, args.upload_seconds, honour, args.slow_uploads, stop, answers),
    )
    uploaders.start()
    await asyncio.sleep(args.upload_seconds + 5)  # every uploader has sent a body: it waits, or sends another
    during = await measure("during_slow_uploads")
    stop.set()
    statuses = answers.get(timeout=60)
    uploaders.join(timeout=60)
    return {
        "slow_uploads": args.slow_uploads,
        "upload_kind": args.upload_kind,
        "upload_bytes": len(request.body(0)),
        "honour_retry_after": honour,
        "upload_seconds": args.upload_seconds,
        "upload_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "results": before + during,
    }


def scenarios(job_id: str, created: list[str]) -> list[tuple[str, object]]:
    """GET job, GET list, POST dataset. The POSTs come last: in embedded mode the jobs they queue run on the
    same cores and would slow whatever is measured after them."""

    async def get_job(conn, i, n):
        return await conn.request("GET", f"/v1/jobs/{job_id}")

    async def list_jobs(conn, i, n):
        return await conn.request("GET", "/v1/jobs?limit=20")

    async def post_dataset(conn, i, n):
        body = {**POST_BODY, "seed": len(created) * 10**6 + i * 10**4 + n}
        status, answer = await conn.request("POST", "/v1/datasets", body)
        if status == 202:
            created.append(json.loads(answer)["job_id"])
        return status, answer

    return [("get_job", get_job), ("list_jobs", list_jobs), ("post_dataset", post_dataset)]


async def run(
    url: str,
    key: str,
    clients_list: list[int],
    duration: float,
    warmup: float,
    queued: int,
    only: list[str] | None = None,
    args: argparse.Namespace | None = None,
) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
        seed = await c.post("/v1/datasets", json={**POST_BODY, "seed": 10**12})
        seed.raise_for_status()
        job_id = seed.json()["job_id"]
        # Let the job behind it finish first where jobs run here: its start-up would compete for the CPU.
        await c.get(f"/v1/jobs/{job_id}", params={"wait": 20})  # stays queued where no worker runs
    created: list[str] = []
    results = []
    queue = None
    for name, fn in scenarios(job_id, created):
        if name == "post_dataset" and queued:
            # Before the POST scenario, whose own jobs would already fill the queue.
            queue = await queued_jobs_effect(url, key, job_id, queued, duration, warmup)
            created += queue.pop("job_ids")
        if only and name not in only:
            continue
        for clients in clients_list:
            result = await scenario(
                name, fn, url=url, key=key, clients=clients, duration=duration, warmup=warmup
            )
            results.append({**result, "clients": clients})
    uploads = None
    if only and "slow_uploads" in only and args is not None:
        uploads = await slow_uploads_effect(url, key, job_id, clients_list[0], duration, warmup, args)
        results += uploads.pop("results")
    await cancel_all(url, key, created)
    return {"results": results, "queued": queue, "uploads": uploads}


async def queued_jobs_effect(
    url: str, key: str, job_id: str, count: int, duration: float, warmup: float
) -> dict:
    """GET job at 16 clients before and after ``count`` more jobs are queued (nobody runs them): the ratio of
    the two p50 latencies shows whether a long queue slows the hot path."""

    async def get_job(conn, i, n):
        return await conn.request("GET", f"/v1/jobs/{job_id}")

    async def rate(label: str) -> dict:
        return await scenario(label, get_job, url=url, key=key, clients=16, duration=duration, warmup=warmup)

    before = await rate("get_job_before_queue")
    ids = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        sem = asyncio.Semaphore(8)

        async def post(n):
            async with sem:
                r = await c.post("/v1/datasets", json={**POST_BODY, "seed": 10**13 + n})
                r.raise_for_status()
                ids.append(r.json()["job_id"])

        await asyncio.gather(*(post(n) for n in range(count)))
        waiting = (await c.get("/v1/jobs", params={"state": "queued", "limit": 1})).json()
    after = await rate("get_job_after_queue")
    return {
        "queued": count,
        "still_queued_sample": len(waiting["data"]),
        "before": before,
        "after": after,
        "p50_ratio": round(after["p50_ms"] / before["p50_ms"], 3),
        "rps_ratio": round(before["rps"] / after["rps"], 3),
        "job_ids": ids,
    }


async def cancel_all(url: str, key: str, job_ids: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        sem = asyncio.Semaphore(8)

        async def cancel(jid):
            async with sem:
                await c.post(f"/v1/jobs/{jid}/cancel")

        await asyncio.gather(*(cancel(j) for j in job_ids))


async def in_process(requests: int) -> list[dict]:
    """Sequential requests through the ASGI app itself: CPU milliseconds per request (client included)."""
    from service import migrate
    from service.app import create_app
    from service.auth import create_key
    from service.db import Database
    from service.settings import Settings

    with tempfile.TemporaryDirectory(prefix="sbaudit-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            rate_limit_per_second=0,
            job_rate_limit_per_minute=0,
            max_active_jobs_per_owner=0,
        )
        migrate.upgrade(settings.database_url)
        db = Database.connect(settings.database_url)
        key, _ = create_key(db, owner="bench")
        transport = httpx.ASGITransport(app=create_app(settings, db=db))
        headers = {"Authorization": f"Bearer {key}"}
        results = []
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client:
            job_id = (await client.post("/v1/datasets", json=POST_BODY)).json()["job_id"]
            calls = {
                "healthz": lambda n: client.get("/healthz"),
                "get_job": lambda n: client.get(f"/v1/jobs/{job_id}"),
                "list_jobs": lambda n: client.get("/v1/jobs", params={"limit": 20}),
                "post_dataset": lambda n: client.post("/v1/datasets", json={**POST_BODY, "seed": n}),
            }
            for name, call in calls.items():
                for n in range(50):
                    await call(n)
                cpu, wall = time.process_time(), time.perf_counter()
                for n in range(requests):
                    await call(10_000 + n)
                results.append(
                    {
                        "scenario": name,
                        "cpu_ms_per_request": round((time.process_time() - cpu) / requests * 1000, 3),
                        "wall_ms_per_request": round((time.perf_counter() - wall) / requests * 1000, 3),
                    }
                )
        db.dispose()
    return results


# The benchmark drives one key far past the default per-key rate limits and per-owner cap on active jobs; it
# measures the API, not them.
UNLIMITED = {
    "SBAUDIT_RATE_LIMIT_PER_SECOND": "0",
    "SBAUDIT_JOB_RATE_LIMIT_PER_MINUTE": "0",
    "SBAUDIT_MAX_ACTIVE_JOBS_PER_OWNER": "0",
}


class ThrowAwayServer:
    """``sbaudit serve`` on a free port in a temporary data dir. ``scaled``: PostgreSQL (a fresh database)
    and Redis (Celery), ``api_workers`` uvicorn processes and no `sbaudit worker`: jobs stay queued, as if
    the workers ran on other hosts, so the numbers are the API's alone."""

    def __init__(
        self,
        mode: str,
        api_workers: int,
        pg_url: str,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.mode, self.tmp = mode, tempfile.TemporaryDirectory(prefix="sbaudit-bench-")
        data_dir = Path(self.tmp.name) / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
        env.update(
            UNLIMITED,
            SBAUDIT_DATA_DIR=str(data_dir),
            SBAUDIT_ACCESS_LOG="false",
            SBAUDIT_LOG_LEVEL="warning",
            OMP_NUM_THREADS="1",
        )
        env.update(extra_env or {})
        self.database = None
        if mode == "scaled":
            import psycopg

            self.pg_admin, self.database = pg_url, f"sbaudit_bench_{os.getpid()}"
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.database}"')
            parts = urlsplit(pg_url)
            env.update(
                SBAUDIT_DATABASE_URL=parts._replace(
                    scheme="postgresql+psycopg", path=f"/{self.database}"
                ).geturl(),
                SBAUDIT_BROKER_URL=redis_url,
                SBAUDIT_API_WORKERS=str(api_workers),
            )
        sbaudit = Path(sys.executable).with_name("sbaudit")
        self.proc = subprocess.Popen(
            [str(sbaudit), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.key = (data_dir / "admin-key").read_text().strip()
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.close()
        raise SystemExit("the server did not start")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        if self.database:
            import psycopg

            with psycopg.connect(self.pg_admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        self.tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--key",
        default=os.environ.get("SBAUDIT_API_KEY"),
        help="default: $SBAUDIT_API_KEY or ./sbaudit-data/admin-key",
    )
    parser.add_argument("--clients", default="16", help="comma-separated concurrency levels, e.g. 1,16,64")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--start-server",
        choices=("embedded", "scaled"),
        help="start a throw-away server in this mode (scaled: PostgreSQL + Redis, no workers)",
    )
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn processes of a scaled server")
    parser.add_argument(
        "--queued",
        type=int,
        default=0,
        help="then queue this many jobs and compare GET job before/after (needs jobs that stay "
        "queued: a scaled server, or a server whose workers are busy or stopped)",
    )
    parser.add_argument(
        "--pg-url", default=os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/14"
    )
    parser.add_argument(
        "--scenarios", help="comma-separated subset of get_job,list_jobs,post_dataset; or slow_uploads"
    )
    parser.add_argument("--slow-uploads", type=int, default=40, help="concurrent uploaders (slow_uploads)")
    parser.add_argument(
        "--upload-kind",
        choices=("model", "dataset"),
        default="model",
        help="model: a small checkpoint, slow to validate (torch); dataset: an .npz of --upload-bytes",
    )
    parser.add_argument("--upload-bytes", type=int, default=256 << 10, help="size of a dataset upload's file")
    parser.add_argument(
        "--ignore-retry-after", action="store_true", help="uploaders send again at once after a 503"
    )
    parser.add_argument("--upload-seconds", type=float, default=2.0, help="time each upload's body takes")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server --start-server starts, e.g. SBAUDIT_UPLOAD_VALIDATOR_USER= where the "
        "user nobody cannot run this interpreter",
    )
    parser.add_argument("--in-process", action="store_true", help="measure CPU per request in this process")
    parser.add_argument("--requests", type=int, default=500, help="requests per scenario with --in-process")
    args = parser.parse_args()
    if args.in_process:
        results = asyncio.run(in_process(args.requests))
        for r in results:
            print(f"{r['scenario']:>13}: {r['cpu_ms_per_request']:6.2f} ms CPU per request", file=sys.stderr)
        print(
            json.dumps(
                {
                    "bench": "api_load",
                    "mode": "in_process",
                    "requests": args.requests,
                    "python": platform.python_version(),
                    "results": results,
                }
            )
        )
        return

    clients = [int(c) for c in args.clients.split(",")]
    load_before = os.getloadavg()[0]  # 1-minute load average: what else was running
    server = None
    url, key = args.url, args.key
    if args.start_server:
        extra = dict(item.split("=", 1) for item in args.server_env)
        server = ThrowAwayServer(args.start_server, args.api_workers, args.pg_url, args.redis_url, extra)
        url, key = server.url, server.key
    elif key is None:
        key_file = Path("sbaudit-data/admin-key")
        if not key_file.exists():
            raise SystemExit(
                "no API key: pass --key, set SBAUDIT_API_KEY, or run from the directory of `make serve`"
            )
        key = key_file.read_text().strip()
    try:
        only = args.scenarios.split(",") if args.scenarios else None
        out = asyncio.run(run(url, key, clients, args.duration, args.warmup, args.queued, only, args))
    finally:
        if server is not None:
            server.close()
    for r in out["results"]:
        print(
            f"{r['clients']:>3} clients {r['scenario']:>13}: {r['rps']:8.1f} req/s  "
            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}",
            file=sys.stderr,
        )
    if out["uploads"]:
        u = out["uploads"]
        print(f"{u['slow_uploads']} slow uploaders, answers: {u['upload_statuses']}", file=sys.stderr)
    if out["queued"]:
        q = out["queued"]
        print(
            f"GET job with {q['queued']} more queued jobs: p50 x{q['p50_ratio']}, req/s /{q['rps_ratio']}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "bench": "api_load",
                "mode": args.start_server or "url",
                "url": url,
                "api_workers": args.api_workers if args.start_server == "scaled" else 1,
                "duration_s": args.duration,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
                **out,
            }
        )
    )


if __name__ == "__main__":
    main()
