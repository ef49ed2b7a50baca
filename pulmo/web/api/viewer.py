"""Viewer data: ``GET /api/studies/{id}/viewer`` (geometry, regions, nodules, key slice) and
``GET /api/studies/{id}/viewer/{kind}/{axis}/{index}`` (one slice as bytes, see
:mod:`pulmo.web.services.viewer`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, db, principal
from pulmo.web.services import access, viewer

router = APIRouter(prefix="/api", tags=["viewer"])


@router.get("/studies/{study_id}/viewer")
def viewer_meta(study_id: int, request: Request, p: Principal = Depends(principal),
                session: Session = Depends(db, scope="function")) -> dict:
    study = access.study_for(session, p.user, study_id)
    return viewer.meta(request.app.state.storage, study)


def slice_response(data: bytes, rows: int, cols: int, kind: str) -> Response:
    return Response(data, media_type="application/octet-stream", headers={
        "X-Rows": str(rows), "X-Cols": str(cols), "X-Dtype": "int16" if kind == "hu" else "uint8",
        "Cache-Control": "private, max-age=600"})


@router.get("/studies/{study_id}/viewer/{kind}/{axis}/{index}")
def viewer_slice(study_id: int, kind: str, axis: str, index: int, request: Request,
                 p: Principal = Depends(principal), session: Session = Depends(db, scope="function")) -> Response:
    study = access.study_for(session, p.user, study_id)
    data, rows, cols = viewer.slice_bytes(request.app.state.storage, study, kind, axis, index)
    return slice_response(data, rows, cols, kind)
