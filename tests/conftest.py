"""Fixtures shared by the service, worker and end-to-end tests: a migrated SQLite database in a temporary
data dir, the API app on it, and API keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_testing import LMS5_DESCRIPTION
from upload_testing import validator_user_env

from service import migrate
from service.auth import create_key
from service.db import Database
from service.ids import new_id
from service.models import Dataset, Model, utcnow
from service.settings import Settings


@pytest.fixture(scope="session")
def mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server shared by the session's MLflow tests (tests/mlflow_support.py)."""
    from mlflow_support import mlflow_server

    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SBAUDIT_* setting from the developer's shell leaks into a test (but the upload validator's user
    where this interpreter needs it: upload_testing.validator_user_env)."""
    for name in list(os.environ):
        if name.startswith("SBAUDIT_"):
            monkeypatch.delenv(name)
    for name, value in validator_user_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def settings(tmp_path: Path, clean_env: None) -> Settings:
    return Settings(data_dir=tmp_path / "data", progress_interval_seconds=0.0)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    migrate.upgrade(settings.database_url)
    database = Database.connect(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings, db: Database):
    from sbserver.wiring import upload_validator_program
    from service.app import create_app

    return create_app(settings, db=db, upload_validator=upload_validator_program())


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def auth(db: Database) -> dict[str, str]:
    key, _ = create_key(db, owner="alice")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def other_auth(db: Database) -> dict[str, str]:
    key, _ = create_key(db, owner="bob")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def ready_dataset(db: Database):
    """Insert a ready dataset row directly (no job run): ``ready_dataset(owner) -> id``."""

    def make(owner: str = "alice", description: dict[str, Any] | None = None) -> str:
        row = Dataset(
            id=new_id("dataset"),
            owner=owner,
            status="ready",
            job_id=new_id("job"),
            spec={"preset": "LMS-5"},
            description=description or LMS5_DESCRIPTION,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        with db.write_session() as session:
            session.add(row)
        return row.id

    return make


@pytest.fixture
def ready_model(db: Database, ready_dataset):
    def make(owner: str = "alice", dataset_id: str | None = None) -> str:
        dataset_id = dataset_id or ready_dataset(owner)
        row = Model(
            id=new_id("model"),
            owner=owner,
            status="ready",
            job_id=new_id("job"),
            dataset_id=dataset_id,
            architecture={"name": "fcn", "width": 20, "depth": 1},
            training={},
            seed=0,
            input_shape=[50],
            num_classes=2,
            result={"metrics": {"test_accuracy": 1.0}, "updates": 10},
        )
        with db.write_session() as session:
            session.add(row)
        return row.id

    return make
