"""Signing in to the web app: an API key becomes a server-side session with a CSRF token.

The cookie carries a random token; the store keeps its SHA-256 hash, the session's CSRF token,
who signed in and the hash of the key they used (revoking the key ends the session). Before a
session exists, the login form is protected by a double-submit token: a cookie and a hidden
field that must match.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from prefloop.serve.auth import Authenticator, Permission, Principal, hash_key
from prefloop.store.models import AppSession, utcnow

COOKIE = "prefloop_session"
LOGIN_COOKIE = "prefloop_login_csrf"


@dataclass(frozen=True, slots=True)
class WebUser:
    """Who is signed in, with the CSRF token their forms carry."""

    name: str
    role: str
    csrf: str
    session_id: int

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class SignInError(Exception):
    """The key cannot sign in; the message says why (shown on the login page)."""


def may_use_app(principal: Principal) -> bool:
    return principal.may(Permission.READ) and principal.may(Permission.FEEDBACK)


def sign_in(
    session: Session, authenticator: Authenticator, key: str, *, minutes: int
) -> tuple[str, WebUser]:
    """A new session for ``key``: the cookie's token and the user."""
    key = key.strip()
    if not key:
        raise SignInError("Enter your API key (it starts with pfk_).")
    principal = authenticator.authenticate(key)
    if principal is None:
        raise SignInError("This API key is unknown or revoked. Ask an admin for a key.")
    if not may_use_app(principal):
        raise SignInError(
            f"A {principal.role} key cannot use the web app; sign in with a labeler or admin key."
        )
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.execute(  # sessions over a day past their end are of no use to anyone
        delete(AppSession).where(AppSession.expires_at < now - timedelta(days=1))
    )
    record = AppSession(
        token_hash=hash_key(token),
        csrf_token=secrets.token_urlsafe(32),
        name=principal.name,
        role=principal.role,
        key_hash=hash_key(key),
        created_at=now,
        expires_at=now + timedelta(minutes=minutes),
    )
    session.add(record)
    session.flush()
    return token, WebUser(principal.name, principal.role, record.csrf_token, record.id)


def current_user(
    session: Session, authenticator: Authenticator, token: str | None
) -> tuple[WebUser | None, str | None]:
    """The session's user, or ``(None, reason)``: ``missing``, ``expired`` or ``ended``."""
    if not token:
        return None, "missing"
    record = session.scalar(select(AppSession).where(AppSession.token_hash == hash_key(token)))
    if record is None or record.ended_at is not None:
        return None, "ended"
    expires = record.expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= datetime.now(UTC):
        return None, "expired"
    if not authenticator.is_active(record.key_hash):
        return None, "ended"
    return WebUser(record.name, record.role, record.csrf_token, record.id), None


def sign_out(session: Session, token: str | None) -> None:
    if not token:
        return
    record = session.scalar(select(AppSession).where(AppSession.token_hash == hash_key(token)))
    if record is not None and record.ended_at is None:
        record.ended_at = utcnow()


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (False when either is missing)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(24)
