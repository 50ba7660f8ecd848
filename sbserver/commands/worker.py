"""``sbaudit worker``: a Celery worker that runs jobs (scaled mode; needs SBAUDIT_BROKER_URL)."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run jobs from the broker (one at a time; start one worker per GPU)",
        description="Consume job ids from SBAUDIT_BROKER_URL and run them against SBAUDIT_DATABASE_URL "
        "and the shared SBAUDIT_DATA_DIR. Runs one job at a time; start one worker per GPU "
        "(CUDA_VISIBLE_DEVICES).",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from sbclient.cli.errors import CliError
    from sbserver.commands.common import load_settings, require_migrated
    from worker.celery_app import QUEUE, make_celery, preload_job_modules
    from worker.logs import configure_logging

    settings = load_settings()
    if not settings.broker_url:
        raise CliError(
            "SBAUDIT_BROKER_URL is not set (e.g. redis://localhost:6379/0); without a broker "
            "`sbaudit serve` runs jobs itself"
        )
    require_migrated(settings)
    configure_logging(settings.log_level)
    if settings.preload_job_modules:
        preload_job_modules()  # before the pool starts: every pool child forks with it loaded
    app = make_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            "--pool=prefork",
            "--concurrency=1",
            f"--queues={QUEUE}",
            f"--hostname=sbaudit-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0
