"""Users (admin only): ``POST /api/users``, ``GET /api/users``, ``PATCH /api/users/{id}``
(deactivate or reactivate, role, new password)."""

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
    q = select(User).join(Organisation).order_by(Organisation.name, User.username)
    scope = accounts.admin_scope(p.user)
    if scope is not None:   # a hospital's administrator sees their hospital's users
        q = q.where(User.organisation_id == scope)
    rows = session.execute(q).scalars()
    return [_out(u) for u in rows]


class UserChange(BaseModel):
    active: bool | None = None
    role: str | None = Field(None, max_length=20)
    password: str | None = Field(None, max_length=1000)


@router.patch("/users/{user_id}", response_model=UserOut)
def change(user_id: int, body: UserChange, request: Request, p: Principal = Depends(require_roles("admin")),
           session: Session = Depends(db, scope="function")) -> UserOut:
    """Deactivate or reactivate a user, change their role, or set a new password (their sessions
    and tokens end when deactivated or given a new password)."""
    user = accounts.update_user(session, user_id, p.user, active=body.active, role=body.role, password=body.password,
                                address=client_address(request))
    return _out(user)
