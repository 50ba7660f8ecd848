"""The job runner with stand-in handlers (no engine): results are all-or-nothing, cancellation stops a job
at its next progress point, a lost lease records nothing, errors become one-line messages."""

from __future__ import annotations

import threading

from service_testing import queue_job, state
from sqlalchemy import select

from service import jobstore
from service.models import Artifact, Job, Model
from worker.runner import HandlerResult, JobError, OutputFile, run_job


def run(db, settings, job_id, handler, **kwargs):
    return run_job(job_id, settings=settings, db=db, handlers={"generate_dataset": handler}, **kwargs)


def artifacts(db):
    with db.read_session() as session:
        return list(session.scalars(select(Artifact)))


def writes_two_files(ctx):
    a, b = ctx.scratch / "a.bin", ctx.scratch / "b.json"
    a.write_bytes(b"\x00" * 100)
    b.write_text('{"x": 1}')
    ctx.report("work", 1, 2, loss=float("nan"))
    return HandlerResult(
        files=[OutputFile("arrays", a, "application/octet-stream", "a.bin"),
               OutputFile("description", b, "application/json", "b.json")],
        fields={"description": {"input_shape": [3], "score": float("inf")}},
    )  # fmt: skip


def test_success_records_artifacts_and_resource_together(db, settings):
    job_id = queue_job(db)
    assert run(db, settings, job_id, writes_two_files) == "succeeded"
    job, resource = state(db, job_id)
    assert job.state == "succeeded" and job.progress == 1.0 and job.finished_at is not None
    assert resource.status == "ready"
    assert resource.description == {"input_shape": [3], "score": None}  # non-finite -> null
    stored = artifacts(db)
    assert sorted(a.kind for a in stored) == ["arrays", "description"]
    assert all(a.resource_id == resource.id and a.owner == "alice" for a in stored)
    assert not list(settings.scratch_dir.iterdir()), "scratch is cleaned up"


def test_a_failing_handler_leaves_nothing_behind(db, settings):
    def fails_after_writing(ctx):
        (ctx.scratch / "half.bin").write_bytes(b"partial")
        raise ValueError("n_train must be at least 2\nsecond line")

    job_id = queue_job(db)
    assert run(db, settings, job_id, fails_after_writing) == "failed"
    job, resource = state(db, job_id)
    assert job.error == "n_train must be at least 2 second line"
    assert resource.status == "failed" and resource.description is None
    assert artifacts(db) == []


def test_unexpected_errors_are_reported_without_a_traceback(db, settings):
    def crashes(ctx):
        raise KeyError("oops")

    job_id = queue_job(db)
    assert run(db, settings, job_id, crashes) == "failed"
    job, _ = state(db, job_id)
    assert job.error.startswith("internal error: KeyError") and "Traceback" not in job.error


def test_cancel_stops_at_the_next_progress_point(db, settings):
    reached = []

    def long_job(ctx):
        for step in range(1000):
            if step == 3:
                jobstore.cancel_job(db, owner="alice", job_id=ctx.job_id)
            ctx.report("train", step, 1000)
            reached.append(step)
        raise AssertionError("not canceled")

    job_id = queue_job(db)
    assert run(db, settings, job_id, long_job) == "canceled"
    assert reached == [0, 1, 2]
    job, resource = state(db, job_id)
    assert job.state == "canceled" and resource.status == "canceled" and artifacts(db) == []


def test_cancel_after_the_last_progress_point_still_cancels(db, settings):
    def cancel_then_finish(ctx):
        result = writes_two_files(ctx)
        jobstore.cancel_job(db, owner="alice", job_id=ctx.job_id)
        return result

    job_id = queue_job(db)
    assert run(db, settings, job_id, cancel_then_finish) == "canceled"
    assert artifacts(db) == []


def test_a_job_whose_lease_was_lost_records_nothing(db, settings):
    def presumed_dead(ctx):
        # The reaper re-queued the job and another worker took it while this one was stuck.
        jobstore.expire_lease(db, job_id=ctx.job_id, worker_id=db_worker(ctx))
        jobstore.reap_expired(db)
        jobstore.claim_job(db, job_id=ctx.job_id, worker_id="someone-else", lease_seconds=30)
        return writes_two_files(ctx)

    def db_worker(ctx):
        job, _ = state(db, ctx.job_id)
        return job.worker_id

    job_id = queue_job(db)
    assert run(db, settings, job_id, presumed_dead) == "lost"
    job, _ = state(db, job_id)
    assert job.state == "running" and job.worker_id == "someone-else" and job.attempt == 2
    assert artifacts(db) == []


def test_shutdown_releases_the_job(db, settings):
    stop = threading.Event()

    def interrupted(ctx):
        stop.set()
        ctx.report("train", 1, 10)
        raise AssertionError("not interrupted")

    job_id = queue_job(db)
    assert run(db, settings, job_id, interrupted, stop_event=stop) == "released"
    job, _ = state(db, job_id)
    assert job.state == "queued" and job.attempt == 1


def test_duplicate_delivery_is_a_no_op(db, settings):
    job_id = queue_job(db)
    assert run(db, settings, job_id, writes_two_files) == "succeeded"
    assert run(db, settings, job_id, writes_two_files) == "skipped"
    assert len(artifacts(db)) == 2


def test_job_errors_are_user_facing(db, settings):
    def missing_input(ctx):
        raise JobError("dataset ds_x is not available")

    job_id = queue_job(db)
    run(db, settings, job_id, missing_input)
    assert state(db, job_id)[0].error == "dataset ds_x is not available"


def test_progress_writes_are_throttled(db, settings):
    throttled = settings.model_copy(update={"progress_interval_seconds": 3600})
    seen = []

    def many_events(ctx):
        for step in range(500):
            ctx.report("train", step, 500)
        job, _ = state(db, ctx.job_id)
        seen.append(job.detail["step"])
        return HandlerResult()

    job_id = queue_job(db)
    assert run(db, throttled, job_id, many_events) == "succeeded"
    assert seen == [0], "only the first event of the interval was written"


def waiting_model(db, dataset_job_id: str) -> str:
    """A train_model job waiting for the dataset of ``dataset_job_id``, as POST /v1/models creates it."""
    dataset_id = state(db, dataset_job_id)[1].id
    with db.write_session() as session:
        row = Model(
            id="mdl_waitingmodel0001", owner="alice", status="waiting", job_id="", dataset_id=dataset_id
        )
        job = jobstore.create_job(
            session, owner="alice", kind="train_model", resource_type="model", resource_id=row.id,
            params={}, max_attempts=3, waiting_for=[dataset_id],
        )  # fmt: skip
        row.job_id = job.id
        session.add(row)
    return job.id


def test_success_queues_and_dispatches_the_jobs_waiting_for_the_result(db, settings):
    job_id = queue_job(db)
    model_job = waiting_model(db, job_id)
    dispatched: list[list[str]] = []
    assert run(db, settings, job_id, writes_two_files, dispatch=dispatched.append) == "succeeded"
    assert dispatched == [[model_job]]
    with db.read_session() as session:
        assert session.get(Job, model_job).state == "queued"


def test_failure_fails_the_jobs_waiting_for_the_result_and_dispatches_nothing(db, settings):
    def fails(ctx):
        raise JobError("no such preset")

    job_id = queue_job(db)
    model_job = waiting_model(db, job_id)
    dispatched: list[list[str]] = []
    assert run(db, settings, job_id, fails, dispatch=dispatched.append) == "failed"
    assert dispatched == []
    dataset_id = state(db, job_id)[1].id
    with db.read_session() as session:
        job = session.get(Job, model_job)
        assert job.state == "failed" and job.error == f"input dataset {dataset_id} failed: no such preset"
