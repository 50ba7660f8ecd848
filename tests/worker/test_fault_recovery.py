"""What lets a job survive faults: the fault-injection hook, the blob ledger that removes what a killed
attempt stored, retries through a database outage, the reaper's clean-up, and re-sending lost messages."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from service_testing import queue_job, state
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from test_runner import run, writes_two_files

from service import jobstore
from service.models import Job, utcnow
from service.storage import ArtifactStore
from worker import faults, job_files, runner

# --- the fault-injection hook ----------------------------------------------------------------------------


def test_fault_pauses_are_parsed_and_unknown_points_rejected():
    assert faults.configured_pauses("") == {}
    assert faults.configured_pauses("mid_artifacts:2.5, after_artifacts:1") == {
        "mid_artifacts": 2.5,
        "after_artifacts": 1.0,
    }
    with pytest.raises(ValueError, match="unknown point 'mid'"):
        faults.configured_pauses("mid:1")


def test_a_fault_pause_marks_and_sleeps_once_per_job(tmp_path, monkeypatch):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv(faults.ENV_VAR, "before_artifacts:7")
    for _ in range(2):
        faults.pause("before_artifacts", job_id="job_1", data_dir=tmp_path)
        faults.pause("mid_artifacts", job_id="job_1", data_dir=tmp_path)  # not configured: inert
    assert slept == [7.0]
    marker = faults.marker_path(tmp_path, "before_artifacts", "job_1")
    assert marker.read_text().strip() == str(os.getpid())


# --- the blob ledger ---------------------------------------------------------------------------------------


def stored(settings, name: str, content: bytes):
    path = settings.data_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_the_ledger_removes_only_blobs_the_job_created_and_nobody_wants(db, settings):
    store = ArtifactStore(settings.artifacts_dir)
    shared = store.put_bytes(b"already there")  # someone else's content: never removed
    ledger = job_files.blob_ledger(settings, "job_x")
    orphan = ledger.put_file(stored(settings, "a", b"only this attempt"))
    restored = ledger.put_file(stored(settings, "b", b"another job stores it too"))
    ledger.put_file(stored(settings, "c", b"already there"))
    os.utime(store.path_for(restored.sha256), ns=(1, 1))  # a job storing it now refreshes the mtime

    assert ledger.collect(db) == [orphan.sha256]
    assert not store.exists(orphan.sha256)
    assert store.exists(restored.sha256) and store.exists(shared.sha256)
    assert not ledger.path.exists()


def test_an_attempt_that_ends_the_job_removes_what_a_killed_attempt_left(db, settings):
    job_id = queue_job(db)
    # A killed first attempt: its scratch dir, and a blob stored but never recorded.
    (settings.scratch_dir / f"{job_id}-deadbeef").mkdir(parents=True)
    orphan = job_files.blob_ledger(settings, job_id).put_file(stored(settings, "w", b"old weights"))
    assert run(db, settings, job_id, writes_two_files) == "succeeded"
    store = ArtifactStore(settings.artifacts_dir)
    assert not store.exists(orphan.sha256)
    assert not list(settings.scratch_dir.iterdir())
    assert not list(settings.checkpoints_dir.iterdir()), "no ledger, no checkpoint"
    assert len(list(settings.artifacts_dir.glob("??/*"))) == 2, "the recorded blobs stay"


def test_the_reaper_removes_the_files_of_the_jobs_it_ends(db, settings):
    canceled, requeued = queue_job(db), queue_job(db)
    for job_id in (canceled, requeued):
        jobstore.claim_job(db, job_id=job_id, worker_id="dead", lease_seconds=1)
        (settings.scratch_dir / f"{job_id}-0a0b").mkdir(parents=True)
        settings.checkpoints_dir.mkdir(exist_ok=True)
        for name in (f"{job_id}.pt", f"{job_id}.pt.tmp"):  # .tmp: killed while saving the checkpoint
            (settings.checkpoints_dir / name).write_bytes(b"state")
    jobstore.cancel_job(db, owner="alice", job_id=canceled)
    ended = []

    def clean_up(job_id):
        ended.append(job_id)
        job_files.clean_up_ended_job(settings, db, job_id)

    later = utcnow() + timedelta(seconds=5)
    assert jobstore.reap_expired(db, now=later, on_ended=clean_up) == [requeued]
    assert ended == [canceled]
    remaining = sorted(p.name for p in [*settings.scratch_dir.iterdir(), *settings.checkpoints_dir.iterdir()])
    assert remaining == sorted([f"{requeued}-0a0b", f"{requeued}.pt", f"{requeued}.pt.tmp"]), "resumes"


# --- riding out a database outage --------------------------------------------------------------------------


def outage(calls: int):
    """A stand-in that raises what psycopg raises when the server went away, ``calls`` times."""
    left = [calls]

    def maybe_fail(*_args, **_kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    return maybe_fail


def test_progress_reports_skip_a_database_outage(db, settings, monkeypatch):
    real_renew, failing = jobstore.renew_lease, outage(2)

    def flaky_renew(*args, **kwargs):
        if "progress" in kwargs:  # only the progress writes; the heartbeat is not involved here
            failing()
        return real_renew(*args, **kwargs)

    monkeypatch.setattr(runner.jobstore, "renew_lease", flaky_renew)
    job_id = queue_job(db)
    assert run(db, settings, job_id, writes_two_files) == "succeeded"


def test_recording_the_results_is_retried_through_a_database_outage(db, settings, monkeypatch):
    real_commit, failing = runner._commit, outage(2)

    def flaky_commit(*args, **kwargs):
        failing()
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(runner, "_commit", flaky_commit)
    job_id = queue_job(db)
    assert run(db, settings, job_id, writes_two_files) == "succeeded"
    job, resource = state(db, job_id)
    assert job.state == "succeeded" and resource.status == "ready"


# --- messages the broker lost ----------------------------------------------------------------------------


def test_queued_jobs_are_sent_again_only_when_the_broker_lost_messages(db, settings, monkeypatch):
    from worker import celery_app

    oldest, old, recent = queue_job(db), queue_job(db), queue_job(db)
    jobstore.mark_dispatched(db, [oldest, old, recent])
    with db.write_session() as session:
        for job_id, hours in ((oldest, 2), (old, 1)):
            sent_at = utcnow() - timedelta(hours=hours)
            session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=sent_at))
    before = utcnow() - timedelta(seconds=30)
    assert jobstore.dispatched_queued_counts(db, before=before) == (3, [oldest, old])

    def backlog(messages):
        monkeypatch.setattr(celery_app, "broker_backlog", lambda app: messages)
        return celery_app.lost_messages(None, db, before=before)

    assert backlog(3) == [], "every message is still queued"
    assert backlog(2) == [oldest], "one lost: the longest waiting is sent again"
    assert backlog(0) == [oldest, old], "all lost (Redis restarted): all that waited long are sent again"


def test_the_api_sends_jobs_from_one_thread_and_survives_a_broker_outage(db, settings, monkeypatch):
    from worker import celery_app

    sent, calls = [], []

    def fake_send(app, database, job_ids):
        calls.append(list(job_ids))
        if len(calls) == 1:
            raise ConnectionError("broker down")  # these stay queued, never sent: the reaper's to send
        sent.extend(job_ids)
        jobstore.mark_dispatched(database, job_ids)

    monkeypatch.setattr(celery_app, "send", fake_send)
    executor = celery_app.CeleryExecutor(
        settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}), db
    )
    lost, *jobs = (queue_job(db) for _ in range(4))
    executor.start()
    executor.dispatch(lost)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:  # the first send fails before the others are queued
        time.sleep(0.01)
    assert calls == [[lost]]
    for job_id in jobs:
        executor.dispatch(job_id)
    assert executor.ready() is None, "a failed send does not stop the sender"
    executor.stop()  # sends what is queued before it returns
    assert sent == jobs and sum(calls, []) == [lost, *jobs]
    before = utcnow() + timedelta(seconds=1)
    assert jobstore.undispatched_job_ids(db, before=before) == [lost]
