"""Who may see and do what with a study.

A user sees the studies of their own organisation and the ones shared with them for
consultation. Anything else answers "not found" (404), never "forbidden": the existence of
another organisation's study is not revealed.

=====================  =====  ===========  =========
action                 admin  radiologist  clinician
=====================  =====  ===========  =========
view, comment          own organisation and shared studies, every role
upload                 yes    yes          yes
clinical data, triage  no     yes          yes
edit / sign report     no     yes          no
share, share links     no     yes          yes     (own organisation's studies only)
users, audit, models   yes    no           no
=====================  =====  ===========  =========
"""

from __future__ import annotations

from fastapi import HTTPException
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pulmo.web.models import Study, StudyShare, User

EDIT_REPORT = ("radiologist",)
CLINICAL = ("radiologist", "clinician")
SHARE = ("radiologist", "clinician")


def visible_condition(user: User):
    shared = select(StudyShare.study_id).where(StudyShare.user_id == user.id)
    return or_(Study.organisation_id == user.organisation_id, Study.id.in_(shared))


def study_for(session: Session, user: User, study_id: int, *, owner: bool = False, roles: tuple[str, ...] = ()) -> Study:
    """The study if ``user`` may see it (``owner``: only in their own organisation), else 404;
    403 when they may see it but their role may not do this (``roles``)."""
    study = session.get(Study, study_id) if 0 < study_id < 2**63 else None   # a database integer, or no study
    if study is None:
        raise HTTPException(404, "no such study")
    own = study.organisation_id == user.organisation_id
    if not own:
        shared = session.execute(select(StudyShare.id).where(StudyShare.study_id == study_id,
                                                             StudyShare.user_id == user.id)).first()
        if shared is None:
            raise HTTPException(404, "no such study")
        if owner:
            raise HTTPException(403, "only the organisation that owns the study may do this")
    if roles and user.role not in roles:
        raise HTTPException(403, f"this needs the role {' or '.join(roles)}")
    return study
