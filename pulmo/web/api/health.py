"""``GET /api/health`` (admin): what is wrong with the platform now (:mod:`pulmo.web.services.health`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, db, localised, require_roles
from pulmo.web.services import health

router = APIRouter(prefix="/api", tags=["administration"])


@router.get("/health")
def platform_health(request: Request, p: Principal = Depends(require_roles("admin")),
                    session: Session = Depends(db, scope="function")) -> dict:
    out = health.report(session, request.app.state.storage, request.app.state.settings)
    for check in out["checks"]:   # in the administrator's language, part by part
        check["name"] = localised(request, check["name"])
        check["detail"] = "; ".join(localised(request, part) for part in str(check["detail"]).split("; "))
    return out
