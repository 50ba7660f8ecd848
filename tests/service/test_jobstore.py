"""The job state machine: compare-and-set claims, leases, the reaper."""

from __future__ import annotations

from datetime import timedelta

from service_testing import queue_job, state

from service import jobstore
from service.models import utcnow


def test_only_one_claim_wins(db):
    job_id = queue_job(db)
    assert jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=30) is not None
    assert jobstore.claim_job(db, job_id=job_id, worker_id="b", lease_seconds=30) is None
    job, resource = state(db, job_id)
    assert job.state == "running" and job.worker_id == "a" and resource.status == "running"


def test_renew_only_by_the_holder(db):
    job_id = queue_job(db)
    jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=30)
    assert jobstore.renew_lease(db, job_id=job_id, worker_id="b", lease_seconds=30) is None
    assert jobstore.renew_lease(db, job_id=job_id, worker_id="a", lease_seconds=30, progress=0.5,
                                stage="train", detail={"step": 5}) == "running"  # fmt: skip
    job, _ = state(db, job_id)
    assert job.progress == 0.5 and job.stage == "train" and job.detail == {"step": 5}


def test_reaper_requeues_an_expired_lease_with_the_next_attempt(db):
    job_id = queue_job(db)
    jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=30)
    assert jobstore.reap_expired(db) == []
    assert jobstore.reap_expired(db, now=utcnow() + timedelta(seconds=31)) == [job_id]
    job, resource = state(db, job_id)
    assert (job.state, job.attempt, job.worker_id, resource.status) == ("queued", 2, None, "queued")
    # The lost worker can no longer touch the job.
    assert jobstore.renew_lease(db, job_id=job_id, worker_id="a", lease_seconds=30) is None
    assert not jobstore.end_job(db, job_id=job_id, worker_id="a", state="failed", error="x")


def test_reaper_fails_the_job_after_the_last_attempt(db):
    job_id = queue_job(db, max_attempts=2)
    for attempt in (1, 2):
        jobstore.claim_job(db, job_id=job_id, worker_id=f"w{attempt}", lease_seconds=1)
        jobstore.reap_expired(db, now=utcnow() + timedelta(seconds=5))
    job, resource = state(db, job_id)
    assert job.state == "failed" and job.attempt == 2 and "stopped responding" in job.error
    assert resource.status == "failed" and resource.error == job.error


def test_reaper_finishes_a_dead_canceling_job_as_canceled(db):
    job_id = queue_job(db)
    jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=1)
    jobstore.cancel_job(db, owner="alice", job_id=job_id)
    jobstore.reap_expired(db, now=utcnow() + timedelta(seconds=5))
    job, resource = state(db, job_id)
    assert job.state == "canceled" and resource.status == "canceled"


def test_release_requeues_without_spending_an_attempt(db):
    job_id = queue_job(db)
    jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=30)
    assert jobstore.release_job(db, job_id=job_id, worker_id="a")
    job, resource = state(db, job_id)
    assert (job.state, job.attempt, resource.status) == ("queued", 1, "queued")


def test_expire_lease_hands_the_job_to_the_next_reap(db):
    job_id = queue_job(db)
    jobstore.claim_job(db, job_id=job_id, worker_id="a", lease_seconds=300)
    jobstore.expire_lease(db, job_id=job_id, worker_id="a")
    assert jobstore.reap_expired(db) == [job_id]


def test_queue_order_and_dispatch_bookkeeping(db):
    first, second = queue_job(db), queue_job(db)
    assert jobstore.queued_job_ids(db, limit=10) == [first, second]
    assert jobstore.queued_job_ids(db, exclude=[first], limit=1) == [second]
    later = utcnow() + timedelta(seconds=60)
    assert jobstore.undispatched_job_ids(db, before=later) == [first, second]
    assert jobstore.undispatched_job_ids(db, before=utcnow() - timedelta(seconds=60)) == []
    jobstore.mark_dispatched(db, [first])
    assert jobstore.undispatched_job_ids(db, before=later) == [second]
