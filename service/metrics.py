"""Prometheus metrics: HTTP requests by route template, and jobs by state (read from the database at
scrape time, so every API replica reports the same, true numbers).

The middleware is plain ASGI (no per-request task or body buffering) to keep the request path cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Database
from service.jobstore import JOB_STATES
from service.models import Job

log = logging.getLogger("sbaudit.api")

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


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


class AppMetrics:
    """One registry per app, so tests can build many apps in one process."""

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
        self.registry.register(_JobStateCollector(db))


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
