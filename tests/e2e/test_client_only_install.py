"""The client alone: `pip install .` into a fresh venv brings the `sbaudit` command with httpx and rich and
nothing of the server (no torch, no web stack), and its client commands work against a running server; a
server command says which install it needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "sbclient", "sbengine", "service", "worker", "sbserver")
SERVER_LIBRARIES = ("torch", "fastapi", "sqlalchemy", "celery", "numpy", "uvicorn", "pydantic")


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` of a copy of the source tree (the README's client-only install)."""
    root = tmp_path_factory.mktemp("client-only")
    source = root / "sbaudit"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def test_the_client_install_holds_no_server_library(client_venv):
    probe = (
        "import importlib.util, json; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in %r}))"
    )
    out = subprocess.run(
        [str(client_venv / "bin" / "python"), "-c", probe % (SERVER_LIBRARIES + ("httpx", "rich"),)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found = json.loads(out.stdout)
    assert found["httpx"] and found["rich"]
    assert not any(found[m] for m in SERVER_LIBRARIES), found


def test_the_client_lists_audits_of_a_running_server(client_venv, embedded):
    env = {"PATH": "/usr/bin:/bin", "SBAUDIT_URL": embedded.base_url, "SBAUDIT_API_KEY": embedded.key}
    listed = subprocess.run(
        [str(client_venv / "bin" / "sbaudit"), "audits", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)
    shown = subprocess.run(
        [str(client_venv / "bin" / "sbaudit"), "audits", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr


def test_a_server_command_names_the_install_it_needs(client_venv):
    out = subprocess.run(
        [str(client_venv / "bin" / "sbaudit"), "serve"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.startswith("sbaudit: error: 'sbaudit serve' needs the server install")
    assert "pip install 'sbaudit[server]'" in out.stderr and "Traceback" not in out.stderr
