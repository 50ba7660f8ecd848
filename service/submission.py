"""Accepting a POST that creates a resource and its job: one transaction, Idempotency-Key replay, dispatch.

With an ``Idempotency-Key`` header the first response is stored per (owner, key) together with a hash of
the request; a retry with the same request gets that response again (no second job), and the same key with
a different request is a 422. The record is written in the transaction that creates the resource, so a
retry racing the original either sees the record or loses on the primary key and replays. An owner at or
over their storage quota gets 507 here (service/quota.py), one with as many active jobs as they may have a
429 (service/caps.py); a replay is still answered. A job whose inputs are not ready yet is created
``waiting`` and not dispatched: the job that finishes its last input queues it (service/jobstore.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth import Principal
from service.caps import check_active_jobs
from service.dispatch import Executor
from service.errors import Problem, field_error
from service.jobstore import QUEUED
from service.models import IdempotencyRecord, Job, utcnow

log = logging.getLogger("sbaudit.api")

# build(session) -> (response body, Location, the new job)
Builder = Callable[[Session], tuple[dict[str, Any], str, Job]]


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise field_error("header.Idempotency-Key", "must be 1-255 visible ASCII characters")


def fingerprint(request: Request, body: BaseModel) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.url.path}\n{canonical}".encode()).hexdigest()


def _replay(session: Session, *, owner: str, key: str, digest: str, ttl: timedelta) -> JSONResponse | None:
    record = session.get(IdempotencyRecord, (owner, key))
    if record is None:
        return None
    if record.created_at < utcnow() - ttl:
        session.delete(record)
        session.flush()
        return None
    if record.request_hash != digest:
        raise Problem(
            422,
            "this Idempotency-Key was already used with a different request; use a new key",
            slug="idempotency-key-reused",
            title="Idempotency key reused",
        )
    headers = {"Idempotent-Replayed": "true"}
    if record.location:
        headers["Location"] = record.location
    return JSONResponse(record.response, status_code=record.status_code, headers=headers)


async def submit(
    request: Request,
    *,
    principal: Principal,
    idempotency_key: str | None,
    body: BaseModel,
    build: Builder,
) -> JSONResponse:
    """Create the resource and its job in one transaction (or replay a stored response), then dispatch."""
    db = request.app.state.db
    settings = request.app.state.settings
    ttl = timedelta(hours=settings.idempotency_ttl_hours)
    digest = None
    if idempotency_key is not None:
        _check_key(idempotency_key)
        digest = fingerprint(request, body)

    def accept(session: Session) -> JSONResponse | tuple[dict[str, Any], str, str | None]:
        if digest is not None and idempotency_key is not None:  # both or neither
            replay = _replay(session, owner=principal.owner, key=idempotency_key, digest=digest, ttl=ttl)
            if replay is not None:
                return replay
        request.app.state.usage_gate.check(session, principal.owner, settings.owner_quota_bytes)
        check_active_jobs(session, principal.owner, settings.max_active_jobs_per_owner)
        payload, location, job = build(session)
        # A waiting job is dispatched when its inputs are ready, by whoever finishes the last of them.
        job_id = job.id if job.state == QUEUED else None
        if digest is not None:
            session.add(
                IdempotencyRecord(
                    owner=principal.owner,
                    key=idempotency_key,
                    request_hash=digest,
                    status_code=202,
                    location=location,
                    response=payload,
                )
            )
        return payload, location, job_id

    for attempt in range(2):
        try:
            accepted = await db.run_write(accept)
            break
        except IntegrityError:
            if digest is None or attempt == 1:
                raise
            # A concurrent request with the same key committed first: replay its response.
    if isinstance(accepted, JSONResponse):
        return accepted  # a replay: its job was dispatched the first time
    payload, location, job_id = accepted
    executor: Executor = request.app.state.executor
    try:
        if job_id is not None:
            executor.dispatch(job_id)
    except Exception:  # the job row is committed; the executor's sweep picks it up later
        log.exception("dispatching job %s failed; it stays queued", job_id)
    return JSONResponse(payload, status_code=202, headers={"Location": location})
