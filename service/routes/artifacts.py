"""/v1/artifacts/{id}: download a stored file (weights, arrays, results)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from service.auth import DB, CurrentPrincipal
from service.errors import Problem
from service.models import Artifact
from service.routes.common import PROBLEM_RESPONSES, get_owned, problem

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"], responses=PROBLEM_RESPONSES)
log = logging.getLogger("sbaudit.api")


@router.get(
    "/{artifact_id}",
    response_class=FileResponse,
    summary="Download an artifact",
    operation_id="downloadArtifact",
    responses={
        200: {
            # The type each artifact was stored with (ArtifactRead.content_type): these are the ones jobs
            # write.
            "content": {"application/octet-stream": {}, "application/json": {}, "image/png": {}},
            "description": "The file.",
        },
        503: problem("The file is missing from the artifact store (problem+json)."),
    },
)
def download(artifact_id: str, request: Request, principal: CurrentPrincipal, db: DB) -> FileResponse:
    with db.read_session() as session:
        row = get_owned(session, Artifact, "artifact", owner=principal.owner, resource_id=artifact_id)
    path = request.app.state.store.path_for(row.sha256)
    if not path.is_file():
        log.error("artifact %s: blob %s is missing from the store", row.id, row.sha256)
        raise Problem(503, f"artifact {row.id} is temporarily unavailable", slug="artifact-unavailable")
    return FileResponse(
        path,
        media_type=row.content_type,
        filename=row.filename,
        headers={"ETag": f'"{row.sha256}"', "Cache-Control": "private, max-age=86400, immutable"},
    )
