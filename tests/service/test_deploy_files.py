"""docker-compose.yml and the Dockerfile describe the scaled deployment docs/operations.md describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_volumes(compose):
    services = compose["services"]
    assert set(services) >= {"api", "worker", "postgres", "redis", "migrate"}
    for name in ("api", "worker"):
        assert "sbaudit-data:/data" in services[name]["volumes"], name
    assert "sbaudit-data" in compose["volumes"]


def test_every_long_running_service_has_a_healthcheck(compose):
    for name in ("api", "worker", "postgres", "redis"):
        assert compose["services"][name]["healthcheck"]["test"], name


def test_migrate_runs_once_before_api_and_workers(compose):
    services = compose["services"]
    assert services["migrate"]["command"] == ["sbaudit", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_run_on_the_cpu_as_shipped_and_scale(compose):
    """docker-compose.yml alone starts on a host without an NVIDIA runtime: no device reservation."""
    worker = compose["services"]["worker"]
    assert worker["command"] == ["sbaudit", "worker"]
    assert "deploy" not in worker
    assert worker["environment"]["SBAUDIT_DEVICE"] == "${SBAUDIT_DEVICE:-cpu}"
    assert "container_name" not in worker, "a fixed name would prevent --scale worker=N"
    assert "ports" not in worker


def test_the_gpu_override_reserves_a_gpu_per_worker_and_runs_jobs_on_cuda():
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
    assert set(gpu["services"]) == {"worker"}
    worker = gpu["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"] == {"SBAUDIT_DEVICE": "${SBAUDIT_DEVICE:-cuda}"}


def test_base_images_and_package_index_are_configurable_with_the_usual_defaults(compose):
    services = compose["services"]
    assert services["postgres"]["image"] == "${SBAUDIT_POSTGRES_IMAGE:-postgres:16-alpine}"
    assert services["redis"]["image"] == "${SBAUDIT_REDIS_IMAGE:-redis:7-alpine}"
    build = services["migrate"]["build"]
    assert build["context"] == "."
    assert build["args"]["PYTHON_IMAGE"] == "${SBAUDIT_PYTHON_IMAGE:-python:3.11-slim}"
    assert build["args"]["PIP_INDEX_URL"] == "${SBAUDIT_PIP_INDEX_URL:-https://pypi.org/simple}"


def test_one_build_serves_migrate_api_and_worker(compose):
    """Built once (by migrate), so all three run one image id and a later `up` recreates nothing; api and
    worker never try to pull it from a registry."""
    services = compose["services"]
    for name in ("migrate", "api", "worker"):
        assert services[name]["image"] == "sbaudit:latest", name
    for name in ("api", "worker"):
        assert "build" not in services[name] and services[name]["pull_policy"] == "never", name
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_dockerfile_installs_the_torch_pyproject_pins():
    """torch has a layer of its own (TORCH_REQUIREMENTS); it must name pyproject.toml's releases."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    server = extras["server"]
    pins = sorted(r for r in server if r.startswith(("torch==", "torchvision==")))
    found = re.search(r'^ARG TORCH_REQUIREMENTS="([^"]+)"$', (ROOT / "Dockerfile").read_text(), re.M)
    assert found and sorted(found.group(1).split()) == pins


def test_secrets_are_required_from_the_environment(compose):
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(use.startswith(":?") for use in uses), f"{secret} must be required: ${{{secret}:?...}}"
    env = compose["x-sbaudit-env"]
    assert env["SBAUDIT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["SBAUDIT_BROKER_URL"].startswith("redis://")
    assert "password" not in text.lower().replace("postgres_password", "").replace(
        "redis_password", ""
    ).replace("requirepass", "")


def test_the_api_is_not_published_on_all_interfaces_by_default(compose):
    assert compose["services"]["api"]["ports"][0].startswith("${SBAUDIT_BIND:-127.0.0.1}:")


def test_dockerfile_runs_as_a_non_root_user_with_a_data_volume():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}\n" in text
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert 'VOLUME ["/data"]' in text and "SBAUDIT_DATA_DIR=/data" in text
    assert "COPY migrations" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_every_non_python_file_of_the_packages_is_installed():
    """The Docker image installs the project (not editable): package data must list every such file."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config.get("package-data", {})
    for package in ("sbengine", "service", "worker", "sbclient"):
        for path in (root / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            owner = ".".join(path.parent.relative_to(root).parts)
            candidates = {
                pkg: globs for pkg, globs in patterns.items() if owner == pkg or owner.startswith(pkg + ".")
            }
            relative = {pkg: path.relative_to(root / pkg.replace(".", "/")).as_posix() for pkg in candidates}
            assert any(
                fnmatch.fnmatch(relative[pkg], g) for pkg, globs in candidates.items() for g in globs
            ), path
