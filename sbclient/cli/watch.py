"""Following a job from the command line: a live progress bar on a terminal, plain lines otherwise.

Driven by the server's event stream (sbclient ``Client.wait``, which falls back to long polling). The
bar shows the stage, step/total, the first few metrics of the latest progress event and the server's ETA;
in a log (stderr not a terminal) a line is printed when the state or stage changes, and at most every
``PLAIN_EVERY_SECONDS`` while progress moves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from rich.text import Text

from sbclient.cli.render import duration, metrics_text, step_text

TERMINAL_STATES = ("succeeded", "failed", "canceled")

if TYPE_CHECKING:
    from sbclient import Client, Job, JobEvent

PLAIN_EVERY_SECONDS = 5.0


def stage_text(job: Job) -> str:
    """The stage, or the state before the first one; a waiting job names what it waits for."""
    waiting_for = job.get("waiting_for") or []
    if job["state"] == "waiting" and waiting_for:
        return f"waiting for {', '.join(waiting_for)}"
    return job.get("stage") or job["state"]


def _status(job: Job) -> dict[str, Any]:  # rich task fields (text here)
    detail = job.get("detail") or {}
    eta = job.get("eta_seconds")
    return {
        "stage": stage_text(job),
        "steps": step_text(detail),
        "metrics": metrics_text(detail.get("metrics")),
        "eta": f"ETA {duration(eta)}" if eta is not None else "",
    }


def final_line(job: Job) -> str:
    line = f"job {job['id']} {job['state']}"
    if job.get("error"):
        line += f": {job['error']}"
    return line


def watch_job(client: Client, job_id: str, console: Console) -> Job:
    """Follow ``job_id`` to its end on ``console`` (stderr); return the final job."""
    job = (
        _follow_live(client, job_id, console)
        if console.is_terminal
        else _follow_plain(client, job_id, console)
    )
    style = "green" if job["state"] == "succeeded" else "red"
    console.print(Text(final_line(job), style=style))
    return job


def _follow_live(client: Client, job_id: str, console: Console) -> Job:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.fields[stage]}", style="bold", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[steps]}", markup=False),
        TextColumn("{task.fields[metrics]}", markup=False),
        TextColumn("{task.fields[eta]}", markup=False),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(job_id, total=100, stage="connecting", steps="", metrics="", eta="")

        def show(event: JobEvent) -> None:
            progress.update(task, completed=100 * event.job["progress"], **_status(event.job))

        return client.wait(job_id, on_event=show)


def _follow_plain(client: Client, job_id: str, console: Console) -> Job:
    last_key: tuple[str, str | None] | None = None
    last_time = 0.0

    def show(event: JobEvent) -> None:
        nonlocal last_key, last_time
        job = event.job
        key = (job["state"], stage_text(job))
        now = time.monotonic()
        finished = job["state"] in TERMINAL_STATES  # the final line says it
        if finished or (key == last_key and now - last_time < PLAIN_EVERY_SECONDS):
            return
        last_key, last_time = key, now
        status = _status(job)
        parts = [
            job_id,
            job["state"],
            status["stage"] if status["stage"] != job["state"] else "",
            f"{100 * job['progress']:.0f}%",
            status["steps"],
            status["metrics"],
            status["eta"],
        ]
        console.print(Text("  ".join(p for p in parts if p)))

    return client.wait(job_id, on_event=show)
