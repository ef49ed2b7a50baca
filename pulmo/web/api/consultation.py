"""Remote consultation (:mod:`pulmo.web.services.consultation`).

``POST /api/studies/{id}/shares`` (JSON ``username``) shares a study with a user of another
organisation; ``GET`` lists who it is shared with; ``DELETE .../shares/{user_id}`` ends it
(radiologist or clinician of the owning organisation). ``GET /api/studies/{id}/comments`` and
``POST /api/studies/{id}/comments`` (JSON ``body``, optional ``parent_id``): the threaded
comments, for everyone who sees the study.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.services import access, consultation

router = APIRouter(prefix="/api", tags=["consultation"])


class ShareIn(BaseModel):
    username: str = Field(max_length=100, description="the user of another organisation to consult")


class Participant(BaseModel):
    user_id: int
    username: str
    role: str
    organisation: str
    shared_at: str


class CommentIn(BaseModel):
    body: str = Field(max_length=consultation.MAX_COMMENT * 2)
    parent_id: int | None = Field(None, description="the comment this one answers")


class Author(BaseModel):
    id: int
    username: str
    role: str
    organisation: str


class CommentOut(BaseModel):
    id: int
    parent_id: int | None
    body: str = Field(description="plain text")
    created_at: str
    author: Author


@router.post("/studies/{study_id}/shares", response_model=list[Participant], status_code=201)
def share_study(study_id: int, body: ShareIn, request: Request, p: Principal = Depends(principal),
                session: Session = Depends(db, scope="function")):
    """Share the study with a user of another organisation; answers the participants."""
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.SHARE)
    consultation.share(session, study, p.user, body.username, client_address(request))
    return consultation.participants(session, study)


@router.get("/studies/{study_id}/shares", response_model=list[Participant])
def list_shares(study_id: int, p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    study = access.study_for(session, p.user, study_id)
    return consultation.participants(session, study)


@router.delete("/studies/{study_id}/shares/{user_id}", response_model=list[Participant])
def unshare_study(study_id: int, user_id: int, request: Request, p: Principal = Depends(principal),
                  session: Session = Depends(db, scope="function")):
    study = access.study_for(session, p.user, study_id, owner=True, roles=access.SHARE)
    consultation.unshare(session, study, p.user, user_id, client_address(request))
    return consultation.participants(session, study)


@router.get("/studies/{study_id}/comments", response_model=list[CommentOut])
def list_comments(study_id: int, p: Principal = Depends(principal), session: Session = Depends(db, scope="function")):
    """All comments of the study, oldest first (``parent_id`` gives the thread)."""
    study = access.study_for(session, p.user, study_id)
    return [consultation.comment_out(c) for c in consultation.comments(session, study)]


@router.post("/studies/{study_id}/comments", response_model=CommentOut, status_code=201)
def post_comment(study_id: int, body: CommentIn, request: Request, p: Principal = Depends(principal),
                 session: Session = Depends(db, scope="function")):
    study = access.study_for(session, p.user, study_id)
    c = consultation.post(session, study, p.user, body.body, body.parent_id, client_address(request))
    return consultation.comment_out(c)
