"""Prometheus metrics: HTTP requests by route template; jobs by state and the run time of finished jobs by
kind and outcome (both read from the database at scrape time, so every API replica reports the same, true
numbers, whichever worker on whichever host ran the jobs).

Several API processes (``sbaudit serve`` with SBAUDIT_API_WORKERS > 1) share one set of request figures: the
launcher points them all at one PROMETHEUS_MULTIPROC_DIR (the client library's multiprocess mode), and
/metrics, whichever process answers it, adds up every process' files, those of processes that died and were
replaced included, so counters never go backwards.

The middleware is plain ASGI (no per-request task or body buffering) to keep the request path cheap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Database
from service.jobstore import JOB_STATES, TERMINAL_STATES
from service.models import Job

log = logging.getLogger("sbaudit.api")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# Jobs run from seconds (a small dataset) to hours (an audit of a large model).
JOB_DURATION_BUCKETS = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)
# Set (by the launcher) for every API process of one server: they write their figures there.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _JobStateCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("sbaudit_jobs", "Jobs by state.", labels=["state"])
        counts = dict.fromkeys(JOB_STATES, 0)
        try:
            with self.db.read_session() as session:
                rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
                counts.update({state: count for state, count in rows})
        except Exception:
            log.exception("could not count jobs for /metrics")
            return
        for state, count in counts.items():
            gauge.add_metric([state], count)
        yield gauge


def _run_seconds(dialect: str) -> Any:
    """finished_at - started_at in seconds, as SQL (both columns hold naive UTC)."""
    if dialect == "postgresql":
        return func.extract("epoch", Job.finished_at - Job.started_at)
    return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0


class _JobDurationCollector(Collector):
    """``sbaudit_job_duration_seconds{kind, outcome}``: started to finished of every job that ended
    (succeeded, failed or canceled after it started), as the workers recorded it. One aggregate query:
    the buckets are counted by the database, no job row leaves it."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "sbaudit_job_duration_seconds",
            "Run time of ended jobs (started to finished, as recorded by the workers), by kind and outcome.",
            labels=["kind", "outcome"],
        )
        try:
            seconds = _run_seconds(self.db.engine.dialect.name)
            counts = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in JOB_DURATION_BUCKETS]
            query = (
                select(Job.kind, Job.state, func.count(), func.sum(seconds), *counts)
                .where(
                    and_(
                        Job.state.in_(sorted(TERMINAL_STATES)),
                        Job.started_at.is_not(None),
                        Job.finished_at.is_not(None),
                    )
                )
                .group_by(Job.kind, Job.state)
            )
            with self.db.read_session() as session:
                rows: list[Any] = list(session.execute(query).all())
        except Exception:
            log.exception("could not read job durations for /metrics")
            return
        for kind, outcome, total, sum_seconds, *cumulative in rows:
            buckets = [(repr(b), int(n or 0)) for b, n in zip(JOB_DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", int(total)))
            family.add_metric([kind, outcome], buckets, float(sum_seconds or 0.0))
        yield family


class AppMetrics:
    """One registry per app, so tests can build many apps in one process. ``exposed`` is what /metrics
    serves: this registry, or with PROMETHEUS_MULTIPROC_DIR set, every API process' figures added up."""

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sbaudit_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sbaudit_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        database_figures: list[Collector] = [_JobStateCollector(db), _JobDurationCollector(db)]
        for collector in database_figures:
            self.registry.register(collector)
        self.exposed = self.registry
        shared = os.environ.get(MULTIPROCESS_DIR_ENV)
        if shared:
            self.exposed = CollectorRegistry()
            MultiProcessCollector(self.exposed, path=shared)  # type: ignore[no-untyped-call]
            for collector in database_figures:
                self.exposed.register(collector)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
