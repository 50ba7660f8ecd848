"""Load on the running embedded API from a second process on loopback: GET job, GET list, POST dataset.

Each scenario runs for ``--duration`` seconds with ``--clients`` concurrent keep-alive connections and
reports requests/s and p50/p99 latency (client-side, full round trip). Prints one JSON line on stdout,
a table on stderr.

    # against a server you started with `make serve` (key from ./sbaudit-data/admin-key):
    .venv/bin/python bench/api_load.py --url http://127.0.0.1:8000
    # or let the script start a throw-away embedded server on a free port:
    .venv/bin/python bench/api_load.py --start-server
    # CPU cost per request inside one process (no network, no concurrency; steadier on a busy machine):
    .venv/bin/python bench/api_load.py --in-process

The POST scenario queues real dataset jobs; the script cancels the ones still queued when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
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
            if now >= measure_from:
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


async def run(url: str, key: str, clients: int, duration: float, warmup: float) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        seed = await c.post("/v1/datasets", json={**POST_BODY, "seed": 10**9})
        seed.raise_for_status()
        job_id = seed.json()["job_id"]
        # Let the job behind it finish first: its process start-up would otherwise compete for the CPU.
        await c.get(f"/v1/jobs/{job_id}", params={"wait": 60})
    created: list[str] = [job_id]

    async def get_job(conn, i, n):
        return await conn.request("GET", f"/v1/jobs/{job_id}")

    async def list_jobs(conn, i, n):
        return await conn.request("GET", "/v1/jobs?limit=20")

    async def post_dataset(conn, i, n):
        status, body = await conn.request("POST", "/v1/datasets", {**POST_BODY, "seed": i * 1_000_000 + n})
        if status == 202:
            created.append(json.loads(body)["job_id"])
        return status, body

    results = []
    for name, fn in (("get_job", get_job), ("list_jobs", list_jobs), ("post_dataset", post_dataset)):
        results.append(
            await scenario(name, fn, url=url, key=key, clients=clients, duration=duration, warmup=warmup)
        )
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        sem = asyncio.Semaphore(8)

        async def cancel(jid):
            async with sem:
                await c.post(f"/v1/jobs/{jid}/cancel")

        await asyncio.gather(*(cancel(j) for j in created))
    return results


async def in_process(requests: int) -> list[dict]:
    """Sequential requests through the ASGI app itself: CPU milliseconds per request (client included)."""
    from service import migrate
    from service.app import create_app
    from service.auth import create_key
    from service.db import Database
    from service.settings import Settings

    with tempfile.TemporaryDirectory(prefix="sbaudit-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
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


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
    env.update(SBAUDIT_DATA_DIR=str(data_dir), SBAUDIT_ACCESS_LOG="false", SBAUDIT_LOG_LEVEL="warning")
    sbaudit = Path(sys.executable).with_name("sbaudit")
    proc = subprocess.Popen(
        [str(sbaudit), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, (data_dir / "admin-key").read_text().strip()
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--key",
        default=os.environ.get("SBAUDIT_API_KEY"),
        help="default: $SBAUDIT_API_KEY or ./sbaudit-data/admin-key",
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per scenario")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--start-server", action="store_true", help="start a throw-away embedded server")
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

    proc = None
    tmp = None
    url, key = args.url, args.key
    if args.start_server:
        tmp = tempfile.TemporaryDirectory(prefix="sbaudit-bench-")
        proc, url, key = start_server(Path(tmp.name) / "data")
    elif key is None:
        key_file = Path("sbaudit-data/admin-key")
        if not key_file.exists():
            raise SystemExit(
                "no API key: pass --key, set SBAUDIT_API_KEY, or run from the directory of `make serve`"
            )
        key = key_file.read_text().strip()
    try:
        results = asyncio.run(run(url, key, args.clients, args.duration, args.warmup))
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        if tmp is not None:
            tmp.cleanup()
    for r in results:
        print(
            f"{r['scenario']:>13}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
            f"errors {r['errors']}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "bench": "api_load",
                "mode": "loopback",
                "url": url,
                "clients": args.clients,
                "duration_s": args.duration,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
