"""``sbaudit serve``: migrate, create the first admin key, run the API and (without a broker) the jobs."""

from __future__ import annotations

import argparse

GRACEFUL_SHUTDOWN_SECONDS = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the REST API (embedded mode runs jobs too)",
        description="Migrate the database, create an admin key on first start, and serve the API. Without "
        "SBAUDIT_BROKER_URL jobs run here in subprocesses (SBAUDIT_WORKERS at a time); with it they go to "
        "`sbaudit worker` processes through Celery.",
    )
    p.add_argument("--host", default=None, help="interface to bind (default: SBAUDIT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: SBAUDIT_PORT or 8000)")
    p.set_defaults(handler=run)


def _announce_admin_key(key: str, path) -> None:
    line = "=" * 78
    print(line)
    print("Created the first API key (owner 'admin'). It is shown only this once;")
    print(f"a copy is in {path} (mode 0600). Send it as 'Authorization: Bearer <key>'.")
    print()
    print(f"    {key}")
    print(line, flush=True)


def _check_port_free(host: str, port: int) -> None:
    """Fail with one clear line before migrating and starting jobs, not with uvicorn's traceback after."""
    import socket

    from sbclient.cli.errors import CliError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
            ) from None


def _draining_server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """Tells the executor to stop starting jobs the moment a shutdown signal arrives. uvicorn first lets
        open requests finish (up to GRACEFUL_SHUTDOWN_SECONDS) and only then runs the app's shutdown; a job
        that handed itself back on the same signal would otherwise be started again in that window."""

        def __init__(self, config, executor) -> None:  # noqa: ANN001
            super().__init__(config)
            self.executor = executor

        def handle_exit(self, sig, frame) -> None:  # noqa: ANN001
            self.executor.drain()
            super().handle_exit(sig, frame)

    return DrainingServer


def _executor(settings, db, job_ends):
    if settings.broker_url:
        from worker.celery_app import CeleryExecutor

        return CeleryExecutor(settings, db)
    from worker.local import LocalExecutor

    return LocalExecutor(settings, db, on_job_end=job_ends.notify)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from sbclient.cli.errors import CliError
    from sbserver import api_processes
    from sbserver.asgi import settle_heap
    from sbserver.commands.common import load_settings, migrate, redact
    from sbserver.wiring import upload_validator_program
    from service.app import create_app
    from service.auth import ensure_admin_key
    from service.db import Database
    from service.job_ends import JobEnds
    from worker.logs import configure_logging

    settings = load_settings(host=args.host, port=args.port)
    if settings.api_workers > 1 and not settings.broker_url:
        raise CliError(
            "SBAUDIT_API_WORKERS > 1 needs SBAUDIT_BROKER_URL: "
            "in embedded mode one process serves and runs jobs"
        )
    _check_port_free(settings.host, settings.port)
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings)
    db = Database.connect(settings.database_url, background_checkpoints=True)
    key = ensure_admin_key(db, settings.admin_key_file)
    if key is not None:
        _announce_admin_key(key, settings.admin_key_file)
    elif settings.admin_key_file.exists():
        print(f"sbaudit: the admin API key created on the first start is in {settings.admin_key_file}")
    if settings.broker_url:
        mode = f"jobs go to Celery workers via {redact(settings.broker_url)}"
    else:
        mode = f"jobs run here, {settings.workers} at a time"
    if settings.api_workers > 1:
        mode += f"; {settings.api_workers} API processes"
    print(
        f"sbaudit: serving http://{settings.host}:{settings.port} ({mode}); data in {settings.data_dir}",
        flush=True,
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        # Long-polls (?wait=) would otherwise hold a Ctrl-C for up to a minute.
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        # The app reads X-Forwarded-For itself, trusting SBAUDIT_FORWARDED_ALLOW_IPS (service/app.py).
        "proxy_headers": False,
    }
    if settings.api_workers > 1:
        db.dispose()  # each API process opens its own pool (sbserver/asgi.py)
        if api_processes.reuse_port_supported():
            return api_processes.serve(options, settings.api_workers, grace_seconds=GRACEFUL_SHUTDOWN_SECONDS)
        uvicorn.run(
            "sbserver.asgi:create_app_from_env", factory=True, workers=settings.api_workers, **options
        )
        return 0
    job_ends = JobEnds()
    executor = _executor(settings, db, job_ends)
    app = create_app(
        settings, db=db, executor=executor, upload_validator=upload_validator_program(), job_ends=job_ends
    )
    settle_heap()
    server = _draining_server_class()(uvicorn.Config(app, **options), executor)
    server.run()
    return 0 if server.started else STARTUP_FAILURE
