"""The audit log: append-only, each entry chained to the previous one by a SHA-256 hash.

``hash = SHA-256(prev_hash | at | user | organisation | action | target | address | detail)``;
:func:`verify` recomputes the chain and names the first entry that does not match (an entry
changed, removed or inserted). Appends are serialised (one writer at a time: SQLite's write
lock, taken before the last hash is read, or a PostgreSQL advisory lock) so that two requests or
processes never chain onto the same entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.db import exclusive
from pulmo.web.models import AuditEntry, User, utcnow

GENESIS = "0" * 64
_ADVISORY_KEY = 7_354_118  # any constant: the PostgreSQL advisory lock of the audit chain


def _digest(prev: str, e: AuditEntry) -> str:
    parts = [prev, e.at.isoformat(timespec="microseconds"), str(e.user_id or ""), e.username,
             str(e.organisation_id or ""), e.action, e.target_type, e.target_id, e.address, e.detail]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def record(session: Session, action: str, user: User | None = None, target_type: str = "", target_id="",
           address: str = "", detail: dict | str | None = None, organisation_id: int | None = None) -> AuditEntry:
    """Append one entry (in the caller's transaction): who did ``action`` on what, from where."""
    # one appender at a time, from before the last hash is read (on SQLite a write that changes
    # nothing takes the write lock now, even when the request wrote nothing yet)
    exclusive(session, _ADVISORY_KEY)
    last = session.execute(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)).scalar()
    e = AuditEntry(at=utcnow(), user_id=user.id if user else None, username=user.username if user else "",
                   organisation_id=organisation_id if organisation_id is not None else (user.organisation_id if user else None),
                   action=action, target_type=target_type, target_id=str(target_id or ""), address=address or "",
                   detail=detail if isinstance(detail, str) else json.dumps(detail or {}, sort_keys=True,
                                                                            ensure_ascii=False))
    e.prev_hash = last or GENESIS
    e.hash = _digest(e.prev_hash, e)
    session.add(e)
    session.flush()
    return e


def verify(session: Session, batch: int = 5000) -> dict:
    """Recompute the whole chain: ``{"ok", "entries", "first_bad_id", "reason"}``."""
    prev, n, last_id = GENESIS, 0, 0
    while True:
        rows = session.execute(select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
                               .limit(batch)).scalars().all()
        if not rows:
            return {"ok": True, "entries": n, "first_bad_id": None, "reason": ""}
        for e in rows:
            if e.prev_hash != prev:
                return {"ok": False, "entries": n, "first_bad_id": e.id,
                        "reason": "the entry does not follow the one before it (an entry was removed or inserted)"}
            if _digest(prev, e) != e.hash:
                return {"ok": False, "entries": n, "first_bad_id": e.id, "reason": "the entry's content was changed"}
            prev, n, last_id = e.hash, n + 1, e.id


def search(session: Session, *, user: str = "", action: str = "", target: str = "", since: dt.datetime | None = None,
           until: dt.datetime | None = None, limit: int = 200, offset: int = 0,
           organisation_id: int | None = None) -> list[AuditEntry]:
    """Entries newest first; ``organisation_id``: only that organisation's entries."""
    q = select(AuditEntry)
    if organisation_id is not None:
        q = q.where(AuditEntry.organisation_id == organisation_id)
    if user:
        q = q.where(AuditEntry.username == user)
    if action:
        q = q.where(AuditEntry.action == action)
    if target:
        q = q.where(AuditEntry.target_id == target)
    if since:
        q = q.where(AuditEntry.at >= since)
    if until:
        q = q.where(AuditEntry.at < until)
    return list(session.execute(q.order_by(AuditEntry.id.desc()).limit(limit).offset(offset)).scalars())
