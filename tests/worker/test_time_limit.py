"""Job time limits: a job past SBAUDIT_JOB_TIME_LIMIT_SECONDS ends failed with the reason, never re-queued,
whether it reaches a progress point (the runner stops it), finishes late, or is stuck (the heartbeat stops,
the reaper fails it, the local executor kills its process)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from service_testing import queue_job, state
from sqlalchemy import select

from service import jobstore
from service.models import Artifact, Job, utcnow
from worker.local import LocalExecutor, _Running
from worker.runner import HandlerResult, OutputFile, run_job


def run(db, settings, job_id, handler, **kwargs):
    return run_job(job_id, settings=settings, db=db, handlers={"generate_dataset": handler}, **kwargs)


def limited(settings, seconds: float, **more):
    return settings.model_copy(update={"job_time_limit_seconds": seconds, **more})


def test_a_job_reporting_progress_is_stopped_at_its_limit(db, settings):
    steps = []

    def loops(ctx):
        for step in range(10_000):
            steps.append(step)
            (ctx.scratch / "partial.bin").write_bytes(b"x")
            ctx.report("train", step, 10_000)
            time.sleep(0.01)
        return HandlerResult()

    job_id = queue_job(db)
    started = time.monotonic()
    assert run(db, limited(settings, 0.3), job_id, loops) == "failed"
    assert time.monotonic() - started < 10 and 1 < len(steps) < 10_000  # stopped mid-loop
    job, resource = state(db, job_id)
    assert job.error == "exceeded the time limit of 0.3 s"
    assert (job.state, job.attempt, resource.status) == ("failed", 1, "failed")
    assert resource.error == job.error
    assert not list(settings.scratch_dir.iterdir())
    # Failed means final: the reaper has nothing to re-queue.
    assert jobstore.reap_expired(db, now=utcnow() + timedelta(hours=1)) == []


def test_a_per_kind_limit_overrides_the_default(db, settings):
    def quick_steps(ctx):
        for step in range(20):
            ctx.report("train", step, 20)
            time.sleep(0.01)
        return HandlerResult()

    job_id = queue_job(db)
    generous = limited(settings, 0.05, job_time_limits={"generate_dataset": 60.0})
    assert run(db, generous, job_id, quick_steps) == "succeeded"


def test_results_that_come_after_the_limit_are_not_recorded(db, settings):
    def slow_without_progress(ctx):
        out = ctx.scratch / "a.bin"
        out.write_bytes(b"late")
        time.sleep(0.4)
        return HandlerResult(files=[OutputFile("arrays", out, "application/octet-stream", "a.bin")])

    job_id = queue_job(db)
    assert run(db, limited(settings, 0.2), job_id, slow_without_progress) == "failed"
    job, resource = state(db, job_id)
    assert job.error == "exceeded the time limit of 0.2 s" and resource.status == "failed"
    with db.read_session() as session:
        assert list(session.scalars(select(Artifact))) == []


def test_a_stuck_job_stops_renewing_and_the_reaper_fails_it(db, settings):
    """No progress point at all: past limit + grace the heartbeat lets the lease run out; the reaper then
    fails the job with the reason instead of re-queueing it."""
    release = threading.Event()
    outcome = []
    tight = limited(settings, 0.2, job_time_limit_grace_seconds=0.0, job_lease_seconds=0.6)
    job_id = queue_job(db)
    thread = threading.Thread(
        target=lambda: outcome.append(
            run(db, tight, job_id, lambda ctx: release.wait(20) and HandlerResult())
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while (
            jobstore.reap_expired(db, time_limit=tight.job_time_limit) == [] and time.monotonic() < deadline
        ):
            job, _ = state(db, job_id)
            if job.state == "failed":
                break
            time.sleep(0.1)
        job, resource = state(db, job_id)
        assert (job.state, job.attempt, resource.status) == ("failed", 1, "failed")
        assert job.error == "exceeded the time limit of 0.2 s"
    finally:
        release.set()
        thread.join(timeout=10)
    assert outcome == ["lost"]  # the worker finds the job already ended and records nothing


def started_ago(db, job_id: str, seconds: float) -> None:
    with db.write_session() as session:
        session.get(Job, job_id).started_at = utcnow() - timedelta(seconds=seconds)


def test_the_reaper_requeues_a_dead_job_within_its_limit_and_fails_one_past_it(db, settings):
    young, old = queue_job(db), queue_job(db)
    for job_id in (young, old):
        jobstore.claim_job(db, job_id=job_id, worker_id="w", lease_seconds=1)
    started_ago(db, old, 200)
    later = utcnow() + timedelta(seconds=100)  # both leases ran out; young ran 100 s, old 300 s
    assert jobstore.reap_expired(db, now=later, time_limit=lambda kind: 150.0) == [young]
    job, resource = state(db, old)
    assert (job.state, job.attempt, resource.status) == ("failed", 1, "failed")
    assert job.error == "exceeded the time limit of 150 s"
    assert state(db, young)[0].attempt == 2


class _FakeProcess:
    def __init__(self) -> None:
        self.killed = False

    def is_alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True


def test_the_local_executor_kills_a_process_stuck_past_limit_and_grace(db, settings):
    stuck, fresh = queue_job(db), queue_job(db)
    for job_id in (stuck, fresh):
        jobstore.claim_job(db, job_id=job_id, worker_id="local:x", lease_seconds=30)
    started_ago(db, stuck, 120)
    executor = LocalExecutor(limited(settings, 60.0, job_time_limit_grace_seconds=30.0), db)
    executor._running = {j: _Running(_FakeProcess(), "local:x") for j in (stuck, fresh)}
    executor._kill_overdue()
    assert executor._running[stuck].process.killed
    assert not executor._running[fresh].process.killed


def test_celery_kills_a_pool_child_stuck_past_the_longest_limit(settings):
    from worker.celery_app import make_celery

    configured = limited(settings, 100.0, job_time_limits={"train_model": 500.0}, job_lease_seconds=10.0,
                         job_time_limit_grace_seconds=30.0, broker_url="redis://127.0.0.1:1/0")  # fmt: skip
    assert make_celery(configured).conf.task_time_limit == 500 + 30 + 2 * 10 + 1
