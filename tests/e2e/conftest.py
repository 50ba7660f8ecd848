"""End-to-end fixtures (the helpers they use live in e2e_support.py, importable by the test modules)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from e2e_support import REDIS_URL, Server, private_database, require_server, start_server


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("embedded")
    server = start_server(tmp, SBAUDIT_WORKERS="2")
    yield server
    server.proc.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The scaled tests' database. Tests that need a database of their own use private_database()."""
    with private_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    require_server("Redis", REDIS_URL, 6379)
    import redis

    base = REDIS_URL.rstrip("/")
    number = 8 + secrets.randbelow(8)
    url = f"{base}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def scaled(tmp_path_factory, postgres_url, redis_url) -> Iterator[Server]:
    """API with SBAUDIT_BROKER_URL (Celery executor) on PostgreSQL, plus one `sbaudit worker`."""
    tmp = tmp_path_factory.mktemp("scaled")
    server = start_server(tmp, SBAUDIT_DATABASE_URL=postgres_url, SBAUDIT_BROKER_URL=redis_url)
    try:
        server.start_worker(tmp)
        yield server
    finally:
        for worker in server.workers:
            worker.stop()
        server.proc.stop()
