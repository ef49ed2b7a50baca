"""Viewer data: ``GET /api/studies/{id}/viewer`` (geometry, regions, nodules, key slice) and
``GET /api/studies/{id}/viewer/{kind}/{axis}/{index}`` (one slice as bytes, see
:mod:`pulmo.web.services.viewer`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pulmo.web.app import SESSION_COOKIE, Principal, bearer_token, db, principal
from pulmo.web.models import utcnow
from pulmo.web.services import access, viewer
from pulmo.web.services.security import token_hash

router = APIRouter(prefix="/api", tags=["viewer"])


@router.get("/studies/{study_id}/viewer")
def viewer_meta(study_id: int, request: Request, p: Principal = Depends(principal),
                session: Session = Depends(db, scope="function")) -> dict:
    study = access.study_for(session, p.user, study_id)
    return viewer.meta(request.app.state.storage, study)


def slice_response(request: Request, study, kind: str, axis: str, index: int) -> Response:
    """One slice's bytes, gzip-encoded (once, then cached) when the browser accepts it."""
    gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    data, rows, cols = viewer.slice_payload(request.app.state.storage, study, kind, axis, index, gzip)
    headers = {"X-Rows": str(rows), "X-Cols": str(cols), "X-Dtype": "int16" if kind == "hu" else "uint8",
               "Cache-Control": "private, max-age=600", "Vary": "Accept-Encoding"}
    if gzip:
        headers["Content-Encoding"] = "gzip"   # the compression middleware leaves it as it is
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/studies/{study_id}/viewer/{kind}/{axis}/{index}",
            responses={401: {"description": "no valid credentials"}, 404: {"description": "no such study or slice"}})
def viewer_slice(study_id: int, kind: str, axis: str, index: int, request: Request) -> Response:
    """One slice (the viewer's hot path: the same access rules as every study route, checked by
    :func:`pulmo.web.services.access.slice_access` without the ORM)."""
    token = bearer_token(request)
    via = "token" if token else "session"
    token = token or request.cookies.get(SESSION_COOKIE, "")
    found = access.slice_access(request.app.state.engine, token_hash(token), via, study_id, utcnow()) if token else False
    if found is False:
        raise HTTPException(401, "sign in first (a bearer token, or the web login)" if via == "session" else
                            "the bearer token is invalid, expired or revoked", headers={"WWW-Authenticate": "Bearer"})
    if found is None:
        raise HTTPException(404, "no such study")
    return slice_response(request, found, kind, axis, index)
