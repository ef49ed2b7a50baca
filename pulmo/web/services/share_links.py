"""Share links ("cloud film"): a read-only link to one study's viewer and report.

The link carries a 256-bit random token; the database keeps only its SHA-256 and the first
characters (to tell links apart in a list). A link has an expiry (1 hour to 90 days), can be
revoked, and may have a PIN (argon2-hashed; wrong PINs are rate-limited per link). Through a
link only that study is reachable: its images, findings, key images and the signed report;
not the patient's other studies, clinical data or comments.

Once the PIN was given, the browser keeps a cookie ``pulmo_pin_<link id>`` whose value is an
HMAC of the token under the PIN's stored hash: it cannot be made without the database, and it
stops working when the link is revoked or expires (every request looks the link up).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pulmo.web.db import exclusive
from pulmo.web.models import LoginAttempt, ShareLink, Study, User, utcnow
from pulmo.web.services import audit
from pulmo.web.services.security import hash_password, new_token, token_hash, verify_password

DEFAULT_HOURS = 72.0
MIN_HOURS, MAX_HOURS = 1.0, 24.0 * 90
PIN_MIN, PIN_MAX = 4, 20
PIN_ATTEMPTS, PIN_WINDOW = 5, dt.timedelta(minutes=15)
MAX_ACTIVE = 50  # active links per study
_PIN_LOCK = 7_400_000_000  # advisory lock keys of the links' PIN checks: this + the link's id


def pin_problem(pin: str) -> str | None:
    if not (PIN_MIN <= len(pin) <= PIN_MAX) or not pin.isprintable() or pin.strip() != pin:
        return f"a PIN has {PIN_MIN} to {PIN_MAX} characters, with no spaces at either end"
    return None


def create(session: Session, study: Study, user: User, expires_in_hours: float | None = None,
           pin: str | None = None, address: str = "") -> tuple[str, ShareLink]:
    """A new link (the token is returned once, never stored)."""
    hours = DEFAULT_HOURS if expires_in_hours is None else float(expires_in_hours)
    if not (MIN_HOURS <= hours <= MAX_HOURS):
        raise HTTPException(422, f"expires_in_hours must be between {MIN_HOURS:g} and {MAX_HOURS:g} (90 days)")
    if pin is not None and pin != "":
        problem = pin_problem(pin)
        if problem:
            raise HTTPException(422, problem)
    now = utcnow()
    active = session.execute(select(func.count(ShareLink.id)).where(
        ShareLink.study_id == study.id, ShareLink.revoked_at.is_(None), ShareLink.expires_at > now)).scalar()
    if active >= MAX_ACTIVE:
        raise HTTPException(409, f"this study already has {MAX_ACTIVE} active share links; revoke some first")
    token = new_token(32)
    link = ShareLink(study_id=study.id, token_hash=token_hash(token), token_hint=token[:6], created_by=user.id,
                     created_at=now, expires_at=now + dt.timedelta(hours=hours),
                     pin_hash=hash_password(pin) if pin else None)
    session.add(link)
    session.flush()
    audit.record(session, "share_link.create", user, "study", study.id, address,
                 {"link": link.id, "expires_at": link.expires_at.isoformat(), "pin": bool(pin)})
    return token, link


def links_of(session: Session, study: Study) -> list[ShareLink]:
    return list(session.execute(select(ShareLink).where(ShareLink.study_id == study.id)
                                .order_by(ShareLink.id.desc())).scalars())


def state(link: ShareLink, now: dt.datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if link.revoked_at is not None:
        return "revoked"
    return "expired" if link.expires_at <= (now or utcnow()) else "active"


def find_of_study(session: Session, study: Study, token_or_id: str) -> ShareLink:
    """A link of ``study`` by its token, or by its number in the study's list."""
    q = select(ShareLink).where(ShareLink.study_id == study.id)
    if token_or_id.isascii() and token_or_id.isdigit() and len(token_or_id) < 12:
        link = session.execute(q.where(ShareLink.id == int(token_or_id))).scalar()
    else:
        link = session.execute(q.where(ShareLink.token_hash == token_hash(token_or_id))).scalar()
    if link is None:
        raise HTTPException(404, "no such share link for this study")
    return link


def revoke(session: Session, study: Study, user: User, token_or_id: str, address: str = "") -> ShareLink:
    link = find_of_study(session, study, token_or_id)
    if link.revoked_at is None:
        link.revoked_at = utcnow()
        audit.record(session, "share_link.revoke", user, "study", study.id, address, {"link": link.id})
    return link


def resolve(session: Session, token: str) -> ShareLink:
    """The link of ``token``: 404 when there is none, 410 when it expired or was revoked."""
    if not token or len(token) > 200:
        raise HTTPException(404, "this link does not exist")
    link = session.execute(select(ShareLink).where(ShareLink.token_hash == token_hash(token))).scalar()
    if link is None:
        raise HTTPException(404, "this link does not exist")
    s = state(link)
    if s != "active":
        raise HTTPException(410, "this link was revoked" if s == "revoked" else "this link has expired")
    return link


def cookie_name(link: ShareLink) -> str:
    return f"pulmo_pin_{link.id}"


def unlock_value(link: ShareLink) -> str:
    """The cookie value proving the PIN was given (see the module docstring)."""
    return hmac.new((link.pin_hash or "").encode(), link.token_hash.encode(), hashlib.sha256).hexdigest()


def unlocked(link: ShareLink, cookies: dict) -> bool:
    if not link.pin_hash:
        return True
    return hmac.compare_digest(cookies.get(cookie_name(link), ""), unlock_value(link))


def check_pin(session: Session, link: ShareLink, pin: str, address: str) -> bool:
    """True when ``pin`` is right; wrong PINs count, and after ``PIN_ATTEMPTS`` within
    ``PIN_WINDOW`` (from any address) the link refuses PINs for the rest of the window (429).
    Failures are committed by the caller even when the request ends in an error."""
    exclusive(session, _PIN_LOCK + link.id)   # one PIN check per link at a time: the count below holds
    who = f"share-link:{link.id}"
    since = utcnow() - PIN_WINDOW
    failures = session.execute(select(func.count(LoginAttempt.id)).where(
        LoginAttempt.username == who, LoginAttempt.ok.is_(False), LoginAttempt.at >= since)).scalar() or 0
    if failures >= PIN_ATTEMPTS:
        raise HTTPException(429, "too many wrong PINs for this link; try again in 15 minutes")
    ok = bool(pin) and len(pin) <= PIN_MAX and verify_password(link.pin_hash or "", pin)
    session.add(LoginAttempt(username=who, address=address[:64], ok=ok))
    audit.record(session, "share_link.pin" if ok else "share_link.pin_wrong", None, "study", link.study_id, address,
                 {"link": link.id}, organisation_id=session.get(Study, link.study_id).organisation_id)
    return ok


def link_out(link: ShareLink, now: dt.datetime | None = None) -> dict:
    return {"id": link.id, "token_hint": link.token_hint, "created_at": link.created_at.isoformat() + "Z",
            "expires_at": link.expires_at.isoformat() + "Z", "created_by": link.created_by,
            "revoked_at": link.revoked_at.isoformat() + "Z" if link.revoked_at else None,
            "has_pin": bool(link.pin_hash), "state": state(link, now)}
