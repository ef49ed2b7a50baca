"""Passwords (argon2id), random tokens stored as SHA-256, PINs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HASHER = PasswordHasher()  # argon2id, the library's recommended parameters
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """What the database keeps of a token: a leaked table gives no usable token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def password_problem(password: str, username: str = "") -> str | None:
    """Why a password is refused (too short, the user name), or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in password):
        return "a password may not contain control characters"
    if len(set(password.strip())) < 5:
        return "a password needs at least 5 different characters (not only spaces)"
    if username and password.lower() == username.lower():
        return "the password may not be the user name"
    return None
