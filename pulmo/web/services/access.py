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

from dataclasses import dataclass

from fastapi import HTTPException
from sqlalchemy import and_, or_, select
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


@dataclass(frozen=True)
class StudyRef:
    """The few columns of a study that serving its slices needs (see :func:`slice_access`)."""

    id: int
    organisation_id: int
    status: str
    updated_at: object


def slice_access(engine, token_hash: str, via: str, study_id: int, now) -> StudyRef | None | bool:
    """The hot path of the viewer (one request per slice, many per second): who is calling and
    whether they may see the study, in two plain queries instead of the ORM. ``via`` is
    "token" (a bearer token) or "session" (the browser's cookie); ``token_hash`` the SHA-256 of it.
    False: no valid credentials (401); None: no such study for this user (404); else the study.
    The same rules as :func:`pulmo.web.app.optional_principal` and :func:`study_for`."""
    from pulmo.web.models import ApiToken, WebSession

    t = (ApiToken if via == "token" else WebSession).__table__
    u, st, sh = User.__table__, Study.__table__, StudyShare.__table__
    sid = study_id if 0 < study_id < 2**63 else 0
    shared = select(sh.c.id).where(sh.c.study_id == st.c.id, sh.c.user_id == u.c.id).exists()
    # one round trip: the caller (no row: no valid credentials) and the study if they may see it
    query = (select(u.c.id, st.c.id, st.c.organisation_id, st.c.status, st.c.updated_at)
             .select_from(u.join(t, t.c.user_id == u.c.id)
                          .outerjoin(st, and_(st.c.id == sid, or_(st.c.organisation_id == u.c.organisation_id, shared))))
             .where(t.c.id == token_hash, t.c.expires_at >= now, u.c.active.is_(True)))
    if via == "token":
        query = query.where(t.c.revoked.is_(False))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return False
    return StudyRef(*row[1:]) if row[1] is not None else None
