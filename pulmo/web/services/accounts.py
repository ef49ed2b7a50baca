"""Organisations, users, logins (rate-limited), web sessions and API tokens."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pulmo.web.models import LANGUAGES, ROLES, ApiToken, LoginAttempt, Organisation, User, WebSession, utcnow
from pulmo.web.services import audit
from pulmo.web.services.security import (hash_password, new_token, password_problem, token_hash,
                                         verify_password)

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
DEFAULT_ORGANISATION = "Pulmo"


class AccountError(ValueError):
    """A request about accounts that cannot be met; the message is for the person asking."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def clean_organisation_name(name: str) -> str:
    """An organisation's name as stored: Unicode NFKC, runs of white space made one space; no
    control or format characters (a name that prints like another, or reorders the line)."""
    name = " ".join(unicodedata.normalize("NFKC", name or "").split())
    if not name or len(name) > 200:
        raise AccountError("an organisation needs a name of 1 to 200 characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") for c in name):
        raise AccountError("an organisation's name may not contain control or formatting characters")
    return name


def organisation(session: Session, name: str, create: bool = False) -> Organisation:
    """The organisation called ``name`` (letter case aside), created when ``create``."""
    name = clean_organisation_name(name)
    org = session.execute(select(Organisation).where(func.lower(Organisation.name) == name.lower())).scalar()
    if org is None:
        if not create:
            raise AccountError(f"no organisation called {name!r}", 404)
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org


def create_user(session: Session, username: str, password: str, role: str, organisation_name: str,
                language: str = "en", by: User | None = None, address: str = "") -> User:
    """A new user of ``organisation_name`` (created when new). Raises :class:`AccountError`."""
    username = (username or "").strip()
    if not USERNAME.match(username):
        raise AccountError("a user name is 2 to 64 letters, digits or . _ @ - (starting with a letter or digit)")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if language not in LANGUAGES:
        raise AccountError(f"language must be one of {', '.join(LANGUAGES)}")
    problem = password_problem(password or "", username)
    if problem:
        raise AccountError(problem)
    if session.execute(select(User.id).where(func.lower(User.username) == username.lower())).scalar():
        raise AccountError(f"the user name {username!r} is taken", 409)
    if by is not None and admin_scope(by) is not None:   # a hospital's administrator: their hospital only
        if clean_organisation_name(organisation_name).lower() != by.organisation.name.lower():
            raise AccountError(f"an administrator of {by.organisation.name} creates users of that organisation only",
                               403)
    org = organisation(session, organisation_name, create=True)
    user = User(username=username, password_hash=hash_password(password), role=role, organisation_id=org.id,
                language=language)
    session.add(user)
    session.flush()
    audit.record(session, "user.create", by, "user", user.id, address,
                 {"username": username, "role": role, "organisation": org.name})
    return user


def is_platform_admin(user: User) -> bool:
    """An administrator of the platform's own organisation (the operator of the installation,
    :data:`DEFAULT_ORGANISATION`): manages every organisation. Any other administrator manages
    their own organisation only (its users, DICOM nodes and audit entries)."""
    return user.role == "admin" and user.organisation is not None and user.organisation.name == DEFAULT_ORGANISATION


def admin_scope(user: User) -> int | None:
    """The organisation an administrator manages, or None for the platform's administrators."""
    return None if is_platform_admin(user) else user.organisation_id


def in_scope(by: User | None, organisation_id: int) -> bool:
    return by is None or admin_scope(by) in (None, organisation_id)


def update_user(session: Session, user_id: int, by: User, *, active: bool | None = None, role: str | None = None,
                password: str | None = None, address: str = "") -> User:
    """An admin changes a user: (de)activate, role, new password. Deactivating or a new password
    ends the user's sessions and API tokens at once. An admin cannot lock themselves out."""
    user = session.get(User, user_id) if 0 < user_id < 2**63 else None
    if user is None or not in_scope(by, user.organisation_id):
        raise AccountError("no such user", 404)
    changes = {}
    if role is not None and role != user.role:
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        if user.id == by.id:
            raise AccountError("you cannot change your own role", 409)
        changes["role"] = [user.role, role]
        user.role = role
    if password is not None:
        problem = password_problem(password, user.username)
        if problem:
            raise AccountError(problem)
        user.password_hash = hash_password(password)
        changes["password"] = "changed"
    if active is not None and active != user.active:
        if user.id == by.id:
            raise AccountError("you cannot deactivate yourself", 409)
        user.active = active
        changes["active"] = active
    if "password" in changes or changes.get("active") is False:
        session.execute(delete(WebSession).where(WebSession.user_id == user.id))
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id).values(revoked=True))
    if changes:
        audit.record(session, "user.update", by, "user", user.id, address, {"username": user.username, **changes})
    return user


def bootstrap_admin(session: Session, password: str | None) -> tuple[User | None, str | None]:
    """On the first start (no user at all): an ``admin`` user, with ``password`` or a generated
    one, which is returned to be shown once. Returns ``(user, generated password or None)``."""
    if session.execute(select(func.count(User.id))).scalar():
        return None, None
    generated = None
    if not password:
        generated = password = new_token(12)
    user = create_user(session, "admin", password, "admin", DEFAULT_ORGANISATION)
    return user, generated


def _recent_failures(session: Session, username: str, address: str, window: dt.timedelta) -> int:
    since = utcnow() - window
    return session.execute(select(func.count(LoginAttempt.id)).where(
        LoginAttempt.username == username.lower(), LoginAttempt.address == address, LoginAttempt.ok.is_(False),
        LoginAttempt.at >= since)).scalar() or 0


def authenticate(session: Session, username: str, password: str, address: str, max_attempts: int,
                 window_min: float) -> User:
    """The user whose name and password these are, or :class:`AccountError` (401, or 429 when
    ``max_attempts`` failures from this address for this name fall in the last ``window_min``)."""
    name = (username or "").strip()[:100]
    window = dt.timedelta(minutes=window_min)
    if _recent_failures(session, name, address, window) >= max_attempts:
        _note_failure(session, name, address, "login.throttled")
        raise AccountError(f"too many failed logins; try again in {window_min:.0f} minutes", 429)
    user = session.execute(select(User).where(func.lower(User.username) == name.lower())).scalar()
    ok = user is not None and user.active and verify_password(user.password_hash, password or "")
    if not ok:
        _note_failure(session, name, address, "login.failed")
        raise AccountError("wrong user name or password", 401)
    session.add(LoginAttempt(username=name.lower(), address=address, ok=True))
    audit.record(session, "login", user, "user", user.id, address)
    return user


def _note_failure(session: Session, name: str, address: str, action: str) -> None:
    """Record a failed or refused login in its own transaction: it must count even though the
    request that made it fails (and its own transaction is rolled back)."""
    with Session(session.get_bind()) as own, own.begin():
        own.add(LoginAttempt(username=name.lower(), address=address, ok=False))
        audit.record(own, action, None, "user", name, address)


def new_session(session: Session, user: User, hours: float) -> tuple[str, WebSession]:
    """A web session: returns the cookie's token (only its hash is stored) and the row."""
    token = new_token()
    ws = WebSession(id=token_hash(token), user_id=user.id, csrf=new_token(24),
                    expires_at=utcnow() + dt.timedelta(hours=hours))
    session.add(ws)
    session.flush()
    return token, ws


def session_user(session: Session, token: str) -> tuple[User, WebSession] | None:
    if not token:
        return None
    ws = session.get(WebSession, token_hash(token))
    if ws is None or ws.expires_at < utcnow():
        return None
    user = session.get(User, ws.user_id)
    return (user, ws) if user is not None and user.active else None


def end_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == token_hash(token)))


def new_api_token(session: Session, user: User, hours: float) -> tuple[str, dt.datetime]:
    token = new_token()
    expires = utcnow() + dt.timedelta(hours=hours)
    session.add(ApiToken(id=token_hash(token), user_id=user.id, expires_at=expires))
    session.flush()
    return token, expires


def token_user(session: Session, token: str) -> User | None:
    if not token:
        return None
    row = session.get(ApiToken, token_hash(token))
    if row is None or row.revoked or row.expires_at < utcnow():
        return None
    user = session.get(User, row.user_id)
    return user if user is not None and user.active else None


def set_language(session: Session, user: User, language: str) -> None:
    if language not in LANGUAGES:
        raise AccountError(f"language must be one of {', '.join(LANGUAGES)}")
    user.language = language
