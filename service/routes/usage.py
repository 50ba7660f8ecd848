"""GET /v1/usage: the caller's storage and resource counts, so a client can see a 507 coming."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service import quota
from service.auth import DB, CurrentPrincipal
from service.routes.common import PROBLEM_RESPONSES, model_response, settings_of
from service.schemas.usage import ResourceCounts, UsageRead

router = APIRouter(prefix="/v1/usage", tags=["usage"], responses=PROBLEM_RESPONSES)


@router.get(
    "",
    response_model=UsageRead,
    summary="Your storage use, quota and resource counts",
    operation_id="getUsage",
)
def read_usage(request: Request, principal: CurrentPrincipal, db: DB) -> Response:
    limit = settings_of(request).owner_quota_bytes
    with db.read_session() as session:
        used = quota.bytes_used(session, principal.owner)
        counts = quota.counts(session, principal.owner)
    usage = UsageRead(
        owner=principal.owner,
        bytes_used=used,
        quota_bytes=limit or None,
        bytes_left=max(0, limit - used) if limit else None,
        counts=ResourceCounts(**counts),
    )
    return model_response(usage)
