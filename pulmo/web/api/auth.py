"""``POST /api/auth/token``: a bearer token for the API from a user name and password."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, principal
from pulmo.web.services import accounts

router = APIRouter(prefix="/api", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: str


class Me(BaseModel):
    id: int
    username: str
    role: str
    organisation: str
    language: str


@router.post("/auth/token", response_model=Token)
def token(request: Request, username: str = Form(..., max_length=200), password: str = Form(..., max_length=1000),
          session: Session = Depends(db, scope="function")) -> Token:
    """Form fields ``username`` and ``password``; failed attempts are limited per user name and
    address (429 beyond the limit)."""
    s = request.app.state.settings
    user = accounts.authenticate(session, username, password, client_address(request), s.login_attempts,
                                 s.login_window_min)
    value, expires = accounts.new_api_token(session, user, s.token_hours)
    return Token(access_token=value, expires_at=expires.isoformat() + "Z")


@router.get("/me", response_model=Me)
def me(p: Principal = Depends(principal)) -> Me:
    u = p.user
    return Me(id=u.id, username=u.username, role=u.role, organisation=u.organisation.name, language=u.language)
