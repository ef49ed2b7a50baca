"""The audit log (admin only): ``GET /api/audit`` searches it (a hospital's administrator sees
their hospital's entries, the platform's administrators all), ``GET /api/audit/verify``
recomputes its hash chain (:mod:`pulmo.web.services.audit`)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, require_roles
from pulmo.web.services import accounts, audit

router = APIRouter(prefix="/api", tags=["administration"])


class AuditEntryOut(BaseModel):
    id: int
    at: str = Field(description="UTC, ISO 8601")
    username: str = Field(description="empty: a share link's visitor or the platform itself")
    organisation_id: int | None
    action: str
    target_type: str
    target_id: str
    address: str = Field(description="the client's IP address")
    detail: str = Field(description="JSON")
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    limit: int
    offset: int


class AuditCheck(BaseModel):
    ok: bool
    entries: int = Field(description="entries checked")
    first_bad_id: int | None
    reason: str


@router.get("/audit", response_model=AuditPage)
def search_audit(request: Request,
                 user: str = Query("", max_length=100, description="user name, exactly"),
                 action: str = Query("", max_length=40, description="e.g. study.view, report.sign, share_link.create"),
                 target: str = Query("", max_length=80, description="the target's id, e.g. a study number"),
                 since: dt.datetime | None = Query(None, description="from (ISO 8601, UTC)"),
                 until: dt.datetime | None = Query(None, description="before (ISO 8601, UTC)"),
                 limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
                 p: Principal = Depends(require_roles("admin")), session: Session = Depends(db, scope="function")):
    """Entries newest first: who did what to what, when and from where."""
    def naive(t):
        try:
            return t.astimezone(dt.UTC).replace(tzinfo=None) if t is not None and t.tzinfo else t
        except (OverflowError, ValueError):
            raise HTTPException(422, "since and until must be dates between the years 1 and 9999") from None

    rows = audit.search(session, user=user.strip(), action=action.strip(), target=target.strip(), since=naive(since),
                        until=naive(until), limit=limit, offset=offset,
                        organisation_id=accounts.admin_scope(p.user))
    out = [AuditEntryOut(id=e.id, at=e.at.isoformat() + "Z", username=e.username, organisation_id=e.organisation_id,
                         action=e.action, target_type=e.target_type, target_id=e.target_id, address=e.address,
                         detail=e.detail, hash=e.hash) for e in rows]
    audit.record(session, "audit.search", p.user, "audit", "", client_address(request),
                 {"user": user, "action": action, "target": target, "offset": offset})
    return AuditPage(entries=out, limit=limit, offset=offset)


@router.get("/audit/verify", response_model=AuditCheck)
def verify_audit(request: Request, p: Principal = Depends(require_roles("admin")),
                 session: Session = Depends(db, scope="function")):
    """Recompute the chain: ``ok`` false names the first entry that was changed, removed or inserted."""
    result = audit.verify(session)
    audit.record(session, "audit.verify", p.user, "audit", "", client_address(request),
                 {"ok": result["ok"], "entries": result["entries"]})
    return AuditCheck(**result)
