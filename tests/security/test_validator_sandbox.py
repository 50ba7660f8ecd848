"""The upload validator runs in a sandbox (service/uploads/sandbox.py); its slots never make a request wait.

A probe program, passed as the server's validator, reports what it sees from inside (environment,
descriptors, working directory, user, network, the data directory's files) in its refusal, which the API
hands back as the problem's ``probe`` member: fast, no torch. As root (how these tests run on the
development VM) the probe must run as ``nobody``, so it is started by an interpreter that user can execute.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from service_testing import fields, problem
from upload_testing import upload, upload_model

from service.db import Database
from service.settings import Settings

ROOT = os.geteuid() == 0
MODEL_ROUTE = "/v1/models/uploads"
DATASET_ROUTE = "/v1/datasets/uploads"
BLOCKS = [{"name": "a", "indices": [0]}, {"name": "b", "indices": [1]}]
# What the validator may see of an environment, all of it set by the server.
ALLOWED_VARIABLES = {
    "PATH", "HOME", "TMPDIR", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "MALLOC_ARENA_MAX", "CUDA_VISIBLE_DEVICES",
}  # fmt: skip

PROBE = textwrap.dedent(
    """
    import json, os, socket, sys
    sys.stdin.read()
    admin_key, database, port = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def attempt(action):
        try:
            return "ok: " + str(action())
        except OSError as exc:
            return "refused: " + type(exc).__name__

    def connect(port):
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            return port

    def read(path):
        with open(path, "rb") as fh:
            return len(fh.read())

    report = {
        "env": dict(os.environ),
        "isolated": sys.flags.isolated,
        "fds": [fd for fd in range(3, 1024) if attempt(lambda: os.fstat(fd)).startswith("ok")],
        "cwd": os.getcwd(),
        "listing": sorted(os.listdir(".")),
        "parent_listing": attempt(lambda: os.listdir("..")),
        "nice": os.nice(0),
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "connect_listener": attempt(lambda: connect(port)),
        "connect_redis": attempt(lambda: connect(6379)),
        "admin_key": attempt(lambda: read(admin_key)),
        "database": attempt(lambda: read(database)),
        "database_relative": attempt(lambda: read(os.path.relpath(database))),
    }
    print(json.dumps({"ok": False, "status": 422, "field": "body.file", "detail": "probed",
                      "extra": {"probe": report}}))
    """
)

HOLD = textwrap.dedent(
    """
    import json, os, sys, time
    sys.stdin.read()
    with open(sys.argv[2], "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
        time.sleep(0.02)
    print(json.dumps({"ok": False, "status": 422, "field": "body.file", "detail": "held"}))
    """
)

# A validator that, instead of the weights, leaves a link to a file only the server may read, and accepts.
LINKS = textwrap.dedent(
    """
    import json, os, sys
    sys.stdin.read()
    os.symlink(sys.argv[1], "weights.safetensors")
    print(json.dumps({"ok": True, "format": "safetensors", "architecture": {"name": "fcn"}, "tensors": 1,
                      "parameters": 1}))
    """
)

NEVER = 'import json; print(json.dumps({"ok": False, "status": 422, "field": "body.file", "detail": "ran"}))'


def _python_for_the_validator_user() -> str | None:
    """An interpreter the validator's user can execute (as root: ``nobody``, who may not reach this one)."""
    if not ROOT:
        return sys.executable
    for candidate in dict.fromkeys((sys.executable, "/usr/bin/python3", shutil.which("python3"))):
        if candidate is None:
            continue
        try:
            subprocess.run(
                [candidate, "-I", "-c", ""], user="nobody", extra_groups=[], check=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    return None


PYTHON = _python_for_the_validator_user()
needs_python = pytest.mark.skipif(PYTHON is None, reason="no interpreter the user nobody can execute")
needs_root = pytest.mark.skipif(not ROOT, reason="uid and network isolation need a server started as root")


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory anyone may cross, as an operator's would be (pytest's own temp dirs are closed to others,
    which would hide whether the server closes its data directory)."""
    path = Path(tempfile.mkdtemp(prefix="sbaudit-sandbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(world: Path, clean_env: None) -> Settings:
    data_dir = world / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # whatever the umask: readable by all, as `mkdir` in a shell makes it
    return Settings(
        data_dir=data_dir,
        upload_validator_user="nobody",
        upload_sandbox_dir=world / "sandboxes",
        upload_check_timeout_seconds=120,
    )


def _client(settings: Settings, db: Database, program: list[str]):
    from fastapi.testclient import TestClient

    from service.app import create_app

    return TestClient(create_app(settings, db=db, upload_validator=program))


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (as seen from the test's own network)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


@pytest.fixture
def probed(settings: Settings, db: Database, auth: dict[str, str], listener: int):
    """Upload a small file to a server whose validator is the probe; return what the probe saw."""
    assert PYTHON is not None
    settings.admin_key_file.write_text("sbk_the-admin-key\n")
    settings.admin_key_file.chmod(0o644)  # carelessly readable: only the closed data directory protects it
    db_file = settings.database_url.removeprefix("sqlite:///")
    program = [PYTHON, "-I", "-c", PROBE, str(settings.admin_key_file), db_file, str(listener)]

    def run() -> dict[str, Any]:
        with _client(settings, db, program) as client:
            response = upload(client, auth, DATASET_ROUTE, b"PK\x05\x06" + b"\x00" * 18, blocks=BLOCKS)
        body = problem(response, 422)
        assert body["detail"] == "body.file: probed", body
        return body["probe"]

    return run


@needs_python
def test_the_validator_starts_with_a_minimal_environment_and_no_descriptors(probed, monkeypatch):
    monkeypatch.setenv("SBAUDIT_ADMIN_TOKEN", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("LD_PRELOAD", "")
    inheritable = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inheritable, True)
    try:
        seen = probed()
    finally:
        os.close(inheritable)
    assert set(seen["env"]) <= ALLOWED_VARIABLES, set(seen["env"]) - ALLOWED_VARIABLES
    assert seen["env"]["HOME"] == seen["env"]["TMPDIR"] == seen["cwd"], (
        "what it writes stays in its directory"
    )
    assert seen["env"]["OMP_NUM_THREADS"] == "1" and seen["env"]["CUDA_VISIBLE_DEVICES"] == ""
    assert seen["fds"] == [], "no descriptor beyond stdin, stdout and stderr"
    assert seen["nice"] == min(19, os.nice(0) + 10), "a lower CPU priority than the API"


def test_the_wired_validator_program_runs_in_isolated_mode(tmp_path):
    """``python -I``: no PYTHON* variables, no user site, neither the working nor the script directory on
    the import path, even where the environment were passed on (the sandbox passes none of it)."""
    from sbserver.wiring import upload_validator_program

    program = upload_validator_program()
    assert program[:2] == [sys.executable, "-I"]
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "imported"
    (planted / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    request = json.dumps({"kind": "dataset", "path": "missing", "max_bytes": 10})
    env = {"PATH": os.defpath, "PYTHONPATH": str(planted), "PYTHONSTARTUP": str(planted / "json.py")}
    out = subprocess.run(
        program, input=request, capture_output=True, text=True, env=env, cwd=planted, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1])["ok"] is False
    assert not marker.exists(), "the program imported a module planted on PYTHONPATH or in its directory"


@needs_python
def test_the_validators_working_directory_holds_only_the_upload(probed, settings):
    seen = probed()
    assert seen["listing"] == ["upload"]
    assert not seen["cwd"].startswith(str(settings.data_dir) + os.sep), "outside the data directory"
    if ROOT:  # as the server's own user it could read them, like the server itself
        assert seen["database_relative"].startswith("refused"), seen["database_relative"]
        assert seen["parent_listing"].startswith("refused"), "other validations' directories stay hidden"
    leftovers = list(settings.upload_sandbox_dir.iterdir())
    assert leftovers == [], f"the sandbox is removed with the request: {leftovers}"


@needs_root
@needs_python
def test_the_validator_has_no_network(probed):
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--net", "true"], check=False).returncode != 0:
        pytest.skip("this host refuses new network namespaces (e.g. a container's seccomp profile)")
    seen = probed()
    assert seen["connect_listener"].startswith("refused"), seen["connect_listener"]
    assert seen["connect_redis"].startswith("refused"), seen["connect_redis"]


@needs_root
@needs_python
def test_the_validator_runs_as_another_user_who_cannot_read_the_data_directory(probed, settings):
    nobody = pwd.getpwnam("nobody")
    seen = probed()
    assert seen["uid"] == seen["euid"] == nobody.pw_uid and seen["gid"] == nobody.pw_gid
    assert seen["groups"] in ([], [nobody.pw_gid]), "no supplementary groups"
    assert seen["admin_key"].startswith("refused"), seen["admin_key"]
    assert seen["database"].startswith("refused"), seen["database"]
    assert settings.data_dir.stat().st_mode & 0o007 == 0, "the data directory is closed to others"


@needs_python
def test_an_upload_beyond_the_concurrency_answers_503_at_once_and_no_thread_waits(settings, db, auth, world):
    one_slot = settings.model_copy(update={"upload_check_concurrency": 1})
    signals = world / "signals"
    signals.mkdir(mode=0o777)
    signals.chmod(0o777)  # the validator's user writes `started` there
    release, started = signals / "release", signals / "started"
    answers: dict[str, Any] = {}

    def send(name: str) -> None:
        answers[name] = upload(client, auth, DATASET_ROUTE, b"x" * 64, blocks=BLOCKS)
        answers[name + "_released"] = release.exists()

    with _client(one_slot, db, [PYTHON, "-I", "-c", HOLD, str(release), str(started)]) as client:
        first = threading.Thread(target=send, args=("first",))
        first.start()
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # until the first upload holds the slot and its validator runs
        assert started.exists(), "the first upload's validator did not start"
        busy_threads = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().borrowed_tokens
        )
        second = threading.Thread(target=send, args=("second",))
        second.start()
        second.join(timeout=30)
        release.touch()
        first.join(timeout=60)
        second.join(timeout=60)
    assert not answers["second_released"], "the second upload waited for the first one's validator"
    body = problem(answers["second"], 503)
    assert answers["second"].headers["retry-after"].isdigit()
    assert "SBAUDIT_UPLOAD_CHECK_CONCURRENCY" in body["detail"]
    assert problem(answers["first"], 422)["detail"] == "body.file: held"
    assert busy_threads == 0, "a running validation holds none of the shared worker threads"


@needs_python
def test_a_cancelled_validation_leaves_no_process_and_no_directory(settings, world):
    """A request cancelled mid-validation (the server shutting down) kills the validator and removes its
    sandbox."""
    from service.uploads.validator import validated

    signals = world / "signals"
    signals.mkdir(mode=0o777)
    signals.chmod(0o777)
    release, started = signals / "release", signals / "started"
    upload_file = world / "received"
    upload_file.write_bytes(b"x" * 64)
    program = [PYTHON, "-I", "-c", HOLD, str(release), str(started)]

    async def validate_then_cancel() -> None:
        async def validate() -> None:
            async with validated({"kind": "dataset"}, upload=upload_file, program=program, settings=settings):
                raise AssertionError("the validation was to be cancelled")

        async with anyio.create_task_group() as group:
            group.start_soon(validate)
            with anyio.fail_after(60):
                while not started.exists() or not started.read_text():
                    await anyio.sleep(0.02)
            group.cancel_scope.cancel()

    anyio.run(validate_then_cancel)
    with pytest.raises(ProcessLookupError):
        os.kill(int(started.read_text()), 0)
    assert list(settings.upload_sandbox_dir.iterdir()) == []


@needs_python
def test_what_the_validator_wrote_is_stored_only_as_plain_files(settings, db, auth):
    """A link among the outputs would have the server store a file the validator cannot read itself."""
    settings.admin_key_file.write_text("sbk_the-admin-key\n")
    settings.admin_key_file.chmod(0o600)
    with _client(settings, db, [PYTHON, "-I", "-c", LINKS, str(settings.admin_key_file)]) as client:
        response = upload_model(client, auth, b"x" * 64)
        assert problem(response, 422)["errors"][0]["field"] == "body.file"
        assert "the validator's output was refused" in response.json()["detail"]
        assert client.get("/v1/models", headers=auth).json()["data"] == []
    assert not settings.artifacts_dir.exists() or not any(settings.artifacts_dir.rglob("*"))


@pytest.mark.parametrize(
    ("route", "form", "field"),
    [
        (MODEL_ROUTE, {"input_shape": "3,32,32"}, "body.input_shape"),
        (MODEL_ROUTE, {"num_classes": "11"}, "body.num_classes"),
        (DATASET_ROUTE, {"num_classes": "11"}, "body.num_classes"),
        (DATASET_ROUTE, {"blocks": [{"name": "far", "indices": [0, 100]}]}, "body.blocks.0.indices"),
        (DATASET_ROUTE, {"blocks": [BLOCKS[0], {"name": "box", "rows": [0, 101]}]}, "body.blocks.1.rows"),
    ],
    ids=["input-size", "model-classes", "dataset-classes", "block-index", "block-box"],
)
def test_declared_sizes_over_their_bounds_name_the_field_before_the_validator_runs(
    settings, db, auth, route, form, field
):
    bounded = settings.model_copy(update={"max_input_size": 100, "max_classes": 10})
    with _client(bounded, db, [sys.executable, "-I", "-c", NEVER]) as client:
        if route == MODEL_ROUTE:
            response = upload_model(client, auth, b"x" * 64, **form)
        else:
            response = upload(client, auth, route, b"x" * 64, **{"blocks": BLOCKS, **form})
        assert fields(response) == [field]
        limit = "SBAUDIT_MAX_CLASSES" if field.endswith("num_classes") else "SBAUDIT_MAX_INPUT_SIZE"
        assert limit in response.json()["detail"]


@needs_python
def test_declared_sizes_within_their_bounds_reach_the_validator(settings, db, auth):
    bounded = settings.model_copy(update={"max_input_size": 100, "max_classes": 10})
    with _client(bounded, db, [PYTHON, "-I", "-c", NEVER]) as client:
        response = upload_model(client, auth, b"x" * 64, input_shape="100", num_classes="10")
    assert problem(response, 422)["detail"] == "body.file: ran"
