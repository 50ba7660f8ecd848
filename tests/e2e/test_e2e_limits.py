"""Operating limits against a real `sbaudit serve` (embedded mode): a key revoked with `sbaudit keys revoke`
is refused by the running server at once, a training job past SBAUDIT_JOB_TIME_LIMIT_SECONDS ends failed
with the reason and leaves nothing behind, and `sbaudit gc` run next to the server keeps what it serves."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from e2e_flows import TINY_LMS5, check_artifact, create, long_training, ready
from e2e_support import Server, sbaudit_command, start_server, wait_for_job
from service_testing import problem

TIME_LIMIT = 2


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("limits")
    # Every job kind gets 2 s except dataset generation (its process start-up alone may take that long).
    server = start_server(
        tmp,
        SBAUDIT_JOB_TIME_LIMIT_SECONDS=str(TIME_LIMIT),
        SBAUDIT_JOB_TIME_LIMITS='{"generate_dataset": 600}',
    )
    yield server
    server.proc.stop()


def sbaudit(server: Server, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        sbaudit_command() + list(args), env=server.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_revoked_key_is_refused_by_the_running_server_at_once(limited_server):
    created = sbaudit(limited_server, "keys", "create", "--owner", "eve")
    key = created.stdout.strip()
    key_id = re.search(r"created (key_\S+) for owner", created.stderr).group(1)
    with limited_server.client(key) as client:
        assert client.get("/v1/datasets").status_code == 200
        assert client.get("/v1/usage").json()["owner"] == "eve"  # verified and cached by now

        revoked = sbaudit(limited_server, "keys", "revoke", key_id)
        assert f"revoked {key_id}" in revoked.stdout

        body = problem(client.get("/v1/datasets"), 401)
        assert body["detail"] == "invalid or revoked API key"
        problem(client.get("/v1/usage"), 401)
    again = sbaudit(limited_server, "keys", "revoke", key_id)
    assert "already revoked" in again.stdout
    listing = sbaudit(limited_server, "keys", "list").stdout
    assert re.search(rf"^{key_id} .* eve .*revoked$", listing, re.MULTILINE), listing


def test_a_training_job_past_the_time_limit_fails_with_the_reason(limited_server):
    with limited_server.client() as client:
        dataset = ready(client, "datasets", create(client, "/v1/datasets", TINY_LMS5))
        model = long_training(client, dataset["id"], max_updates=1_000_000)
        job = wait_for_job(client, model["job_id"], timeout=120)
        assert job["state"] == "failed", job
        assert job["error"] == f"exceeded the time limit of {TIME_LIMIT} s"
        assert job["attempt"] == 1  # failed, not re-queued

        resource = client.get(f"/v1/models/{model['id']}").json()
        assert resource["status"] == "failed" and "time limit" in resource["error"]
        assert resource["artifacts"] == []
    data = limited_server.data_dir
    assert not (data / "checkpoints" / f"{model['job_id']}.pt").exists()
    assert not list((data / "scratch").glob(f"{model['job_id']}-*"))

    # gc next to the running server: nothing the server still serves goes.
    collected = sbaudit(limited_server, "gc", "--grace-seconds", "0")
    assert "freed" in collected.stdout
    with limited_server.client() as client:
        for artifact in client.get(f"/v1/datasets/{dataset['id']}").json()["artifacts"]:
            check_artifact(client, artifact)
