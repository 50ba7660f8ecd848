"""The README pipeline end to end through HTTP, against the engine doing the same work in one process.

The pipeline is README.md's "A first audit with curl": generate LMS-5 (``{"preset": "LMS-5", "seed": 0}``),
train the (100,2)-FCN with SGD until 99.99% train accuracy, audit it (randomization and feature dependence,
S = block 0), read the verdict. Each run measures, alternating:

- ``engine``: a fresh Python process that imports sbengine and does the handlers' work in one go: builds and
  saves the dataset, trains the model and saves its weights and training curves, runs the audit and renders
  its figures and report sections. The specs are the ones the API gives its jobs for the README's request
  bodies (computed here with the service's own schemas). It does all of it twice: the first pass pays for
  what the engine imports on first use (the optimizer machinery, matplotlib), the second does not.
  ``engine_seconds`` is the second pass, the engine's own work with nothing left to load: the strict
  baseline, what a notebook that has run the pipeline before spends. ``engine_process_seconds`` runs from
  starting the process to the end of the first pass (interpreter, imports, first use included): what the
  same work costs a user running the engine as a script.
- ``service``: a fresh ``sbaudit serve`` with default settings (SQLite in a temporary data dir; only the log
  level is lowered), started before the clock starts and left until its processes are idle (start-up,
  including the fork server's preload, is over, as it is by the time a user has typed the first request);
  then the README's requests with httpx, following each job as the README does (``--follow longpoll``:
  ``GET /v1/jobs/{id}?wait=60`` until it ends) or as the CLI's ``--wait`` does (``--follow events``:
  ``sbclient.Client.wait``, the event stream). ``service_seconds`` runs from the first POST to the audit
  read back with its verdict.

``ratio`` = service_seconds / engine_seconds (``ratio_to_engine_process``: against engine_process_seconds).
``cpu_ratio`` compares the CPU time both used for it (the server's processes: the API, the fork server and
the job processes; the engine's second pass), which a neighbour's load on a shared machine does not change
as it changes wall time: it shows the work the service adds (storing and hashing files, reloading the
dataset and model in the next job, the database), where ``ratio`` also shows the waiting.
One JSON line per run on stdout, then a summary line (medians, spread). Both sides choose threads the same
way (sbengine runs models this small single-threaded), and the engine process runs at the job processes'
niceness.

    .venv/bin/python bench/pipeline_latency.py --runs 5
    .venv/bin/python bench/pipeline_latency.py --runs 5 --follow events
    .venv/bin/python bench/pipeline_latency.py --runs 5 --server-env SBAUDIT_PRELOAD_JOB_MODULES=false
"""

from __future__ import annotations

import argparse
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
from typing import Any

import httpx

DATASET_BODY: dict[str, Any] = {"preset": "LMS-5", "seed": 0}
MODEL_BODY: dict[str, Any] = {
    "architecture": {"name": "fcn", "width": 100, "depth": 2},
    "training": {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-5,
        "batch_size": 256,
        "stop": {"train_accuracy": 0.9999},
    },
    "seed": 0,
}
AUDIT_BODY: dict[str, Any] = {"checks": ["randomization", "feature_dependence"], "simple_blocks": [0]}
TERMINAL = ("succeeded", "failed", "canceled")
# The CPU priority of the server's job processes (worker/local.py, JOB_NICENESS); the engine process runs at
# it too, so that a neighbour's load slows both sides alike (on an idle machine it changes nothing).
JOB_NICENESS = 10


def engine_specs() -> dict[str, Any]:
    """What the API gives its three jobs for the README's bodies (service/routes/: datasets, models,
    audits)."""
    from service.schemas.audits import AuditCreate
    from service.schemas.datasets import DatasetCreate
    from service.schemas.models import ModelCreate

    dataset = DatasetCreate(**DATASET_BODY)
    model = ModelCreate(dataset_id="ds_0", **MODEL_BODY)
    audit = AuditCreate(model_id="mdl_0", **AUDIT_BODY)
    return {
        "dataset": dataset.engine_request(),
        "architecture": model.architecture.model_dump(mode="json"),
        "training": model.training.model_dump(mode="json"),
        "seed": model.seed,
        "audit": {
            "checks": list(audit.checks),
            "options": audit.resolved_options() or None,
            "verdict_thresholds": audit.verdict_thresholds.model_dump(mode="json"),
            "simple_blocks": audit.simple_blocks,
            "split": audit.split,
            "repeats": audit.repeats,
            "seed": audit.seed,
        },
    }


def engine_pipeline(specs: dict[str, Any], out: Path) -> dict[str, Any]:
    """The same work as the three jobs' handlers (worker/handlers), in this one process: seconds per phase,
    the verdict and the updates trained."""
    from safetensors.torch import save_file

    from sbengine.audit import audit_figures, report_sections, run_audit
    from sbengine.data import build_dataset
    from sbengine.device import resolve_device, seed_everything
    from sbengine.models import build_model
    from sbengine.plots import training_curves
    from sbengine.train import TrainConfig, train

    out.mkdir(parents=True)
    cpu_started = time.process_time()
    started = time.perf_counter()
    device = resolve_device("auto")
    dataset = build_dataset(specs["dataset"], raw_data_dir=str(out / "raw"))
    dataset.save(out / "dataset")
    dataset.describe()
    trained = time.perf_counter()
    seed = int(specs["seed"])
    seed_everything(seed)
    model = build_model(
        specs["architecture"], input_shape=dataset.input_shape, num_classes=dataset.num_classes
    )
    result = train(
        model, dataset, TrainConfig.from_dict(specs["training"]), seed=seed, device=device
    ).to_dict()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "w.st"))
    history = result.pop("history")
    (out / "history.json").write_text(json.dumps(history))
    (out / "curves.png").write_bytes(training_curves(history, title="Training"))
    audited = time.perf_counter()
    a = specs["audit"]
    raw = run_audit(
        model,
        dataset,
        checks=a["checks"],
        simple_blocks=a["simple_blocks"],
        split=a["split"],
        repeats=int(a["repeats"]),
        seed=int(a["seed"]),
        device=device,
        options=a["options"],
        verdict_thresholds=a["verdict_thresholds"],
    )
    for name, png in audit_figures(raw, dataset).items():
        (out / f"{name}.png").write_bytes(png)
    (out / "results.json").write_text(json.dumps(report_sections(raw), default=str))
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "phases": {
            "dataset": round(trained - started, 3),
            "model": round(audited - trained, 3),
            "audit": round(done - audited, 3),
        },
        "verdict": raw["verdict"],
        "updates": result["updates"],
    }


def engine_child(specs: dict[str, Any], out: Path) -> None:
    """Imports the engine, runs the pipeline once (cold: as a script would) and once more (warm: as in a
    notebook that has run it before), and reports when the first run ended (wall clock, for the parent)."""
    os.nice(JOB_NICENESS)
    started = time.perf_counter()
    import sbengine.audit  # noqa: F401  (the imports engine_pipeline does first, timed on their own)
    import sbengine.train  # noqa: F401

    imported = time.perf_counter()
    cold = engine_pipeline(specs, out / "cold")
    cold_ended_at = time.time()
    warm = engine_pipeline(specs, out / "warm")
    print(
        json.dumps(
            {
                "import_seconds": round(imported - started, 3),
                "cold_ended_at": cold_ended_at,
                "cold": cold,
                "warm": warm,
            }
        )
    )


def run_engine(specs: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sbaudit-bench-engine-") as tmp:
        started = time.time()
        proc = subprocess.run(
            [sys.executable, __file__, "--engine-child", json.dumps(specs), tmp],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"the engine run failed:\n{proc.stderr}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"process_seconds": child["cold_ended_at"] - started, **child}


class Server:
    """A fresh ``sbaudit serve`` with default settings on a free port, in a temporary data directory."""

    def __init__(self, extra_env: dict[str, str]) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="sbaudit-bench-serve-")
        data_dir = Path(self.tmp.name) / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SBAUDIT_")}
        env.update(SBAUDIT_DATA_DIR=str(data_dir), SBAUDIT_LOG_LEVEL="warning", SBAUDIT_ACCESS_LOG="false")
        env.update(extra_env)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("sbaudit")), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.key = (data_dir / "admin-key").read_text().strip()
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.close()
        raise SystemExit("the server did not start")

    def settle(self, quiet_seconds: float = 1.0, timeout: float = 60.0) -> None:
        """Wait until the server's processes (its session: the API, the fork server) have used no more than
        2% of a core for ``quiet_seconds``: start-up, including the fork server's preload, is over."""
        ticks = os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + timeout
        previous = self._cpu_ticks()
        while time.monotonic() < deadline:
            time.sleep(quiet_seconds)
            now = self._cpu_ticks()
            if now - previous <= 0.02 * quiet_seconds * ticks:
                return
            previous = now

    def cpu_seconds(self) -> float:
        """CPU time the server's processes have used, the ended job processes included."""
        return self._cpu_ticks() / os.sysconf("SC_CLK_TCK")

    def _cpu_ticks(self) -> int:
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == self.proc.pid:  # session id (field 6 of stat)
                # utime + stime, and cutime + cstime: the job processes the fork server has reaped
                total += sum(int(f) for f in fields[11:15])
        return total

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.tmp.cleanup()


def run_service(follow: str, extra_env: dict[str, str]) -> dict[str, Any]:
    server = Server(extra_env)
    try:
        server.settle()  # a user's server has been up a while before the first request
        headers = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=90) as http:
            from sbclient import Client

            client = Client(server.url, api_key=server.key)

            def wait_for(job_id: str) -> str:
                if follow == "events":
                    return str(client.wait(job_id)["state"])
                while True:
                    state = http.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()["state"]
                    if state in TERMINAL:
                        return str(state)

            steps = {}
            cpu_before = server.cpu_seconds()
            started = time.perf_counter()
            ds = http.post("/v1/datasets", json=DATASET_BODY).raise_for_status().json()
            states = [wait_for(ds["job_id"])]
            steps["dataset"] = time.perf_counter() - started
            mdl = (
                http.post("/v1/models", json={"dataset_id": ds["id"], **MODEL_BODY}).raise_for_status().json()
            )
            states.append(wait_for(mdl["job_id"]))
            steps["model"] = time.perf_counter() - started - steps["dataset"]
            aud = (
                http.post("/v1/audits", json={"model_id": mdl["id"], **AUDIT_BODY}).raise_for_status().json()
            )
            states.append(wait_for(aud["job_id"]))
            audit = http.get(f"/v1/audits/{aud['id']}").raise_for_status().json()
            seconds = time.perf_counter() - started
            cpu_seconds = server.cpu_seconds() - cpu_before
            steps["audit"] = seconds - steps["dataset"] - steps["model"]
            jobs = [http.get(f"/v1/jobs/{r['job_id']}").json() for r in (ds, mdl, aud)]
            client.close()
        if states != ["succeeded"] * 3:
            raise SystemExit(f"the pipeline did not succeed: {states}")
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "verdict": audit["verdict"],
            "steps": {k: round(v, 3) for k, v in steps.items()},
            "jobs": [job_times(job) for job in jobs],
        }
    finally:
        server.close()


def job_times(job: dict[str, Any]) -> dict[str, Any]:
    """Queued -> started -> finished, as the server recorded them (seconds)."""
    from datetime import datetime

    def at(name: str) -> float | None:
        value = job.get(name)
        return datetime.fromisoformat(value).timestamp() if value else None

    created, started, finished = at("created_at"), at("started_at"), at("finished_at")
    return {
        "kind": job["kind"],
        "queued": round(started - created, 3) if created and started else None,
        "ran": round(finished - started, 3) if started and finished else None,
    }


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--engine-child":
        engine_child(json.loads(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--follow", choices=("longpoll", "events"), default="longpoll")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server, e.g. SBAUDIT_PRELOAD_JOB_MODULES=false (default: none)",
    )
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    specs = engine_specs()
    ratios, cold_ratios, cpu_ratios, services, engines = [], [], [], [], []
    for run in range(args.runs):
        # Alternate which side goes first, so a neighbour's load falls on both alike.
        if run % 2:
            service, engine = run_service(args.follow, server_env), run_engine(specs)
        else:
            engine, service = run_engine(specs), run_service(args.follow, server_env)
        warm = engine["warm"]
        ratios.append(service["seconds"] / warm["seconds"])
        cold_ratios.append(service["seconds"] / engine["process_seconds"])
        cpu_ratios.append(service["cpu_seconds"] / warm["cpu_seconds"])
        services.append(service["seconds"])
        engines.append(warm["seconds"])
        print(
            json.dumps(
                {
                    "bench": "pipeline_latency",
                    "run": run,
                    "follow": args.follow,
                    "service_seconds": round(service["seconds"], 3),
                    "engine_seconds": round(warm["seconds"], 3),
                    "ratio": round(ratios[-1], 3),
                    "engine_process_seconds": round(engine["process_seconds"], 3),
                    "ratio_to_engine_process": round(cold_ratios[-1], 3),
                    "engine_cold_work_seconds": round(engine["cold"]["seconds"], 3),
                    "engine_import_seconds": engine["import_seconds"],
                    "service_cpu_seconds": round(service["cpu_seconds"], 3),
                    "engine_cpu_seconds": round(warm["cpu_seconds"], 3),
                    "cpu_ratio": round(cpu_ratios[-1], 3),
                    "engine_phases": warm["phases"],
                    "service_steps": service["steps"],
                    "service_jobs": service["jobs"],
                    "same_verdict": service["verdict"] == warm["verdict"] == engine["cold"]["verdict"],
                    "updates": warm["updates"],
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "bench": "pipeline_latency",
                "summary": True,
                "follow": args.follow,
                "server_env": server_env,
                "runs": args.runs,
                "median_ratio": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
                "median_ratio_to_engine_process": round(statistics.median(cold_ratios), 3),
                "median_cpu_ratio": round(statistics.median(cpu_ratios), 3),
                "cpu_ratio_min": round(min(cpu_ratios), 3),
                "cpu_ratio_max": round(max(cpu_ratios), 3),
                "median_service_seconds": round(statistics.median(services), 3),
                "median_engine_seconds": round(statistics.median(engines), 3),
                "machine": f"{platform.machine()} {os.cpu_count()} threads available",
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
