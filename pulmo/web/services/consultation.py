"""Remote consultation: a study shared with users of other organisations, and threaded comments.

The organisation that owns a study shares it (a radiologist or clinician) with a named user of
another organisation, who then finds it in their worklist and sees exactly the same page:
images, results, report, comments. Everyone who may see the study may comment; a comment may
answer another one (``parent_id``) of the same study. Comments are plain text (shown as text,
never as markup), at most :data:`MAX_COMMENT` characters, and cannot be edited or deleted (the
thread is part of the record; every post is audited).
"""

from __future__ import annotations

import re

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pulmo.web.db import exclusive
from pulmo.web.models import Comment, Study, StudyShare, User
from pulmo.web.services import audit
from pulmo.web.services.reports import clean_text

MAX_COMMENT = 5000
#: Bidirectional embedding, override and isolate controls: a comment could reorder what others see.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
MAX_COMMENTS = 2000  # per study: a runaway script cannot fill the database through one study
_SHARE_LOCK = 7_300_000_000  # advisory lock keys of sharing a study: this + the study's id


def share(session: Session, study: Study, by: User, username: str, address: str = "") -> StudyShare:
    """Share ``study`` with the user called ``username`` of another organisation."""
    name = (username or "").strip()
    target = session.execute(select(User).where(func.lower(User.username) == name.lower())).scalar() \
        if 0 < len(name) <= 100 else None
    if target is None or not target.active:
        raise HTTPException(404, f"no active user called {name[:100]!r}")
    if target.organisation_id == study.organisation_id:
        raise HTTPException(409, f"{target.username} belongs to the organisation that owns the study and sees it already")
    if target.role == "admin":
        raise HTTPException(422, "studies are shared with radiologists and clinicians, not administrators")
    exclusive(session, _SHARE_LOCK + study.id)   # two clicks at once: one share, no error
    existing = session.execute(select(StudyShare).where(StudyShare.study_id == study.id,
                                                        StudyShare.user_id == target.id)).scalar()
    if existing is not None:
        return existing
    row = StudyShare(study_id=study.id, user_id=target.id, shared_by=by.id)
    session.add(row)
    session.flush()
    audit.record(session, "study.share", by, "study", study.id, address,
                 {"with": target.username, "organisation": target.organisation.name})
    return row


def unshare(session: Session, study: Study, by: User, user_id: int, address: str = "") -> None:
    row = session.execute(select(StudyShare).where(StudyShare.study_id == study.id,
                                                   StudyShare.user_id == user_id)).scalar() if 0 < user_id < 2**63 else None
    if row is None:
        raise HTTPException(404, "the study is not shared with this user")
    target = session.get(User, user_id)
    session.delete(row)
    audit.record(session, "study.unshare", by, "study", study.id, address,
                 {"with": target.username if target else str(user_id)})


def participants(session: Session, study: Study) -> list[dict]:
    rows = session.execute(select(StudyShare, User).join(User, User.id == StudyShare.user_id)
                           .where(StudyShare.study_id == study.id).order_by(StudyShare.id)).all()
    return [{"user_id": u.id, "username": u.username, "role": u.role, "organisation": u.organisation.name,
             "shared_at": s.created_at.isoformat() + "Z"} for s, u in rows]


def comments(session: Session, study: Study) -> list[Comment]:
    return list(session.execute(select(Comment).where(Comment.study_id == study.id)
                                .order_by(Comment.id)).scalars())


def post(session: Session, study: Study, author: User, body: str, parent_id: int | None = None,
         address: str = "") -> Comment:
    text = BIDI_CONTROLS.sub("", clean_text(body or "")).strip()
    if not text:
        raise HTTPException(422, "a comment needs some text")
    if len(text) > MAX_COMMENT:
        raise HTTPException(422, f"a comment has at most {MAX_COMMENT} characters")
    if parent_id is not None:
        parent = session.get(Comment, parent_id) if 0 < parent_id < 2**63 else None
        if parent is None or parent.study_id != study.id:
            raise HTTPException(422, "the comment answered is not a comment on this study")
    count = session.execute(select(Comment.id).where(Comment.study_id == study.id)
                            .order_by(Comment.id.desc()).offset(MAX_COMMENTS - 1).limit(1)).first()
    if count is not None:
        raise HTTPException(409, f"this study has reached {MAX_COMMENTS} comments")
    c = Comment(study_id=study.id, author_id=author.id, parent_id=parent_id, body=text)
    session.add(c)
    session.flush()
    audit.record(session, "comment.create", author, "study", study.id, address, {"comment": c.id})
    return c


def comment_out(c: Comment) -> dict:
    a = c.author
    return {"id": c.id, "parent_id": c.parent_id, "body": c.body, "created_at": c.created_at.isoformat() + "Z",
            "author": {"id": a.id, "username": a.username, "role": a.role, "organisation": a.organisation.name}}
