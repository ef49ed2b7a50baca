"""Users (admin only): ``POST /api/users``, ``GET /api/users``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from pulmo.web.app import Principal, client_address, db, require_roles
from pulmo.web.models import Organisation, User
from pulmo.web.services import accounts

router = APIRouter(prefix="/api", tags=["users"])


class NewUser(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1000)
    role: str = Field(max_length=20)
    organisation: str = Field(max_length=200)
    language: str = Field("en", max_length=10)


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    organisation: str
    language: str
    active: bool


def _out(u: User) -> UserOut:
    return UserOut(id=u.id, username=u.username, role=u.role, organisation=u.organisation.name,
                   language=u.language, active=u.active)


@router.post("/users", response_model=UserOut, status_code=201)
def create(body: NewUser, request: Request, p: Principal = Depends(require_roles("admin")),
           session: Session = Depends(db, scope="function")) -> UserOut:
    user = accounts.create_user(session, body.username, body.password, body.role, body.organisation,
                                body.language, by=p.user, address=client_address(request))
    return _out(user)


@router.get("/users", response_model=list[UserOut])
def list_users(p: Principal = Depends(require_roles("admin")), session: Session = Depends(db, scope="function")) -> list[UserOut]:
    rows = session.execute(select(User).join(Organisation).order_by(Organisation.name, User.username)).scalars()
    return [_out(u) for u in rows]
