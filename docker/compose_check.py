"""The checks `make compose-test` runs against a `docker compose up` stack (docker/compose-test.sh starts it
and tears it down). Everything goes over HTTP to the published API port, plus `docker compose` / `docker kill`
for the faults. Each step has a bounded wait and says what it waited for; the first failure ends the run
with a non-zero status (compose-test.sh then prints the services' logs).

Steps: the README's curl walkthrough (extracted from README.md and run with bash), the HTML report, an
upload, a worker killed mid-training (the job resumes on the restarted worker: one model, the full
history), PostgreSQL stopped and started (503s, then recovery), Redis stopped and started (no job lost),
`docker compose restart api worker` (state kept), /metrics (job run-time histograms), and the GPU override's
merged configuration.

Usage: python docker/compose_check.py http://127.0.0.1:PORT   (COMPOSE_PROJECT_NAME, COMPOSE_FILE set)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = ("succeeded", "failed", "canceled")
FCN = {"name": "fcn", "width": 20, "depth": 1}
# Long enough on two CPU cores to be killed in the middle (checkpoints every 25 updates: compose-test.yml).
INTERRUPTIBLE_UPDATES = 4000
SMALL_LMS5 = {"preset": "LMS-5", "n_train": 500, "n_val": 100, "n_test": 100}


def step(title: str) -> None:
    print(f"\n=== {title} ({time.strftime('%H:%M:%S')})", flush=True)


def compose(*args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        ["docker", "compose", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode:
        raise AssertionError(f"docker compose {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result.stdout


def eventually(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """check()'s first truthy value within ``timeout`` s; else fail naming ``what`` and the last error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (httpx.HTTPError, AssertionError, subprocess.SubprocessError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90)

    def create(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json=body)
        assert response.status_code == 202, (path, response.status_code, response.text)
        return response.json()

    def job(self, job_id: str, *, timeout: float = 600) -> dict:
        def ended() -> dict | None:
            job = self.client.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
            return job if job["state"] in TERMINAL else None

        return eventually(f"job {job_id} to end", ended, timeout, interval=0.2)

    def ready(self, kind: str, created: dict, *, timeout: float = 600) -> dict:
        job = self.job(created["job_id"], timeout=timeout)
        assert job["state"] == "succeeded", job
        return self.client.get(f"/v1/{kind}/{created['id']}").json()


def readme_walkthrough(url: str, key: str) -> str:
    """README.md's "A first audit with curl" block, pointed at the stack; returns the audit's id."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## A first audit with curl", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line for line in script.splitlines() if not line.startswith(("export SBAUDIT_KEY=", "API="))]
    assert len(lines) < len(script.splitlines()) - 1, "the walkthrough no longer sets SBAUDIT_KEY and API"
    program = "\n".join(
        ["set -eu", f"export SBAUDIT_KEY={key}", f"API={url}", *lines, 'echo "AUDIT_ID=$AUD"']
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=900, check=False)
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, result.returncode
    assert result.stdout.count("succeeded\n") == 3, "every wait_for prints succeeded"
    assert "simplicity bias" in result.stdout, "the README's verdict"
    found = re.search(r"^AUDIT_ID=(\S+)$", result.stdout, re.M)
    assert found
    return found.group(1)


def report_page(api: Api, audit_id: str) -> None:
    audit = api.client.get(f"/v1/audits/{audit_id}").json()
    page = api.client.get(f"/v1/audits/{audit_id}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.status_code
    assert audit["verdict"] in page.text and audit_id in page.text


def upload(api: Api, audit_id: str) -> None:
    """The walkthrough's trained weights, downloaded and uploaded back as a model of their own."""
    audit = api.client.get(f"/v1/audits/{audit_id}").json()
    model = api.client.get(f"/v1/models/{audit['model_id']}").json()
    weights = next(a for a in model["artifacts"] if a["kind"] == "weights")
    blob = api.client.get(weights["url"])
    assert blob.status_code == 200 and len(blob.content) > 1000, blob.status_code
    form = {"architecture": json.dumps(model["architecture"]), "dataset_id": model["dataset_id"]}
    files = {"file": ("model.safetensors", blob.content, "application/octet-stream")}
    response = api.client.post("/v1/models/uploads", data=form, files=files)
    assert response.status_code == 201, (response.status_code, response.text)
    uploaded = response.json()
    assert uploaded["status"] == "ready" and uploaded["input_shape"] == model["input_shape"], uploaded


def kill_a_worker_mid_training(api: Api) -> None:
    lms5 = {"preset": "LMS-5", "n_train": 2000, "n_val": 500, "n_test": 1000, "seed": 11}
    dataset = api.ready("datasets", api.create("/v1/datasets", lms5))
    stop = {"max_updates": INTERRUPTIBLE_UPDATES}
    training = {"optimizer": "sgd", "lr": 0.1, "batch_size": 256, "eval_every": 100, "stop": stop}
    model = api.create("/v1/models", {"dataset_id": dataset["id"], "architecture": FCN, "training": training})
    job_id = model["job_id"]
    checkpoint = f"/data/checkpoints/{job_id}.pt"

    def checkpointed() -> dict | None:
        job = api.client.get(f"/v1/jobs/{job_id}").json()
        assert job["state"] in ("queued", "running"), job
        if job["state"] != "running" or job["progress"] <= 0:
            return None
        probe = subprocess.run(["docker", "compose", "exec", "-T", "worker", "test", "-f", checkpoint],
                               capture_output=True, timeout=60, check=False)  # fmt: skip
        return job if probe.returncode == 0 else None

    job = eventually("the training job to write a checkpoint", checkpointed, 300, interval=0.5)
    assert job["attempt"] == 1 and job["progress"] < 0.9, job
    containers = compose("ps", "-q", "worker").split()
    assert len(containers) == 1, containers
    print(f"killing worker {containers[0][:12]} at {job['progress']:.0%} of the training", flush=True)
    subprocess.run(["docker", "kill", containers[0]], check=True, capture_output=True, timeout=60)
    compose("start", "worker")  # a no-op when the restart policy has already brought it back

    job = api.job(job_id, timeout=900)
    assert job["state"] == "succeeded", job
    assert job["attempt"] == 2, f"the reaper re-queued the job once: {job}"
    models = api.client.get("/v1/models", params={"dataset_id": dataset["id"]}).json()["data"]
    assert [m["id"] for m in models] == [model["id"]], "exactly one model resource"
    final = models[0]
    assert final["status"] == "ready" and final["result"]["updates"] == INTERRUPTIBLE_UPDATES, final
    history_url = next(a["url"] for a in final["artifacts"] if a["kind"] == "history")
    history = json.loads(api.client.get(history_url).content)
    assert [row["step"] for row in history] == list(range(0, INTERRUPTIBLE_UPDATES + 1, 100)), (
        "the history is kept across the crash"
    )


def restart_postgres(api: Api) -> None:
    compose("stop", "postgres")

    def unavailable() -> bool:
        return (
            api.client.get("/v1/datasets").status_code == 503 and api.client.get("/readyz").status_code == 503
        )

    eventually("the API to answer 503 without PostgreSQL", unavailable, 60)
    problem = api.client.get("/v1/datasets")
    assert problem.headers["content-type"].startswith("application/problem+json"), problem.headers
    print("without PostgreSQL:", problem.status_code, problem.headers.get("retry-after"), problem.text[:200])
    compose("start", "postgres")
    eventually(
        "the API to recover after PostgreSQL is back",
        lambda: api.client.get("/readyz").status_code == 200,
        120,
    )
    eventually("reads to work again", lambda: api.client.get("/v1/datasets").status_code == 200, 60)
    api.ready("datasets", api.create("/v1/datasets", {**SMALL_LMS5, "seed": 21}))


def restart_redis(api: Api) -> None:
    """A job queued just before Redis goes down and one created while it is down both finish."""
    before = api.create("/v1/datasets", {**SMALL_LMS5, "seed": 31})
    compose("stop", "redis")
    during = api.create("/v1/datasets", {**SMALL_LMS5, "seed": 32})
    compose("start", "redis")
    for created in (before, during):
        dataset = api.ready("datasets", created, timeout=300)
        assert dataset["status"] == "ready", dataset


def restart_api_and_worker(api: Api, audit_id: str) -> None:
    before = api.client.get(f"/v1/audits/{audit_id}").json()
    compose("restart", "api", "worker", timeout=300)
    eventually(
        "the API to be ready after the restart", lambda: api.client.get("/readyz").status_code == 200, 180
    )
    after = api.client.get(f"/v1/audits/{audit_id}").json()
    assert after == before
    api.ready("datasets", api.create("/v1/datasets", {**SMALL_LMS5, "seed": 41}))


def metrics(api: Api) -> None:
    """Job run-time histograms for every kind that ran; request counts of both API processes together."""
    text = api.client.get("/metrics").text
    for kind in ("generate_dataset", "train_model", "run_audit"):
        count = rf'^sbaudit_job_duration_seconds_count\{{kind="{kind}",outcome="succeeded"\}} [1-9]'
        assert re.search(count, text, re.M), kind
    # Restarted at the previous step: every request since went to the new pair of processes; the dataset
    # created after the restart is one POST, whichever process took it.
    posts = r'^sbaudit_http_requests_total\{method="POST",route="/v1/datasets",status="202"\} (\S+)$'
    found = re.search(posts, text, re.M)
    assert found and float(found.group(1)) == 1.0, found


def gpu_override() -> None:
    """docker-compose.gpu.yml merged onto the shipped file: a GPU per worker, jobs on CUDA; API unchanged."""
    merged = json.loads(
        compose("-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml", "config", "--format", "json")
    )
    worker, api = merged["services"]["worker"], merged["services"]["api"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1, devices
    assert worker["environment"]["SBAUDIT_DEVICE"] == "cuda"
    assert api["environment"]["SBAUDIT_DEVICE"] == "cpu" and "deploy" not in api


def main(url: str) -> int:
    started = time.monotonic()
    step("the API answers /readyz")
    eventually(
        "GET /readyz to answer 200", lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 300
    )
    key = compose("exec", "-T", "api", "cat", "/data/admin-key").strip()
    assert key.startswith("sbk_"), "the admin key"
    api = Api(url, key)

    step("README walkthrough (curl)")
    audit_id = readme_walkthrough(url, key)
    step("the HTML report")
    report_page(api, audit_id)
    step("an upload")
    upload(api, audit_id)
    step("a worker killed mid-training")
    kill_a_worker_mid_training(api)
    step("PostgreSQL restarted")
    restart_postgres(api)
    step("Redis restarted")
    restart_redis(api)
    step("api and worker restarted")
    restart_api_and_worker(api, audit_id)
    step("/metrics")
    metrics(api)
    step("the GPU override")
    gpu_override()
    print(f"\ncompose checks passed in {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
