"""API keys: roles, creation (shown once, stored as a SHA-256 hash) and verification.

A request carries its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

=========  ================================================================================
role       may
=========  ================================================================================
admin      everything (tasks, arms, labels, keys' routes, reads, select, generate, feedback)
labeler    send feedback and read (tasks, arms, generations, stats)
client     select, generate, complete its generations and send feedback
=========  ================================================================================
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError, NotFoundError
from prefloop.store import Store
from prefloop.store.models import ApiKey, Labeler

Role = Literal["admin", "labeler", "client"]
ROLES: tuple[str, ...] = get_args(Role)
KEY_PREFIX = "pfk_"
_SHOWN_PREFIX_CHARS = 12


class Permission(StrEnum):
    ADMIN = "admin"  # create tasks and arms, change labels
    READ = "read"  # tasks, arms, generations, stats
    SELECT = "select"  # select, generate, complete a generation
    FEEDBACK = "feedback"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "labeler": frozenset({Permission.READ, Permission.FEEDBACK}),
    "client": frozenset({Permission.SELECT, Permission.FEEDBACK}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's name and role (``env`` for ``PREFLOOP_ADMIN_KEY``)."""

    name: str
    role: str
    key_prefix: str

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key. ``key`` is the secret: it is shown once and never stored."""

    key: str
    prefix: str
    name: str
    role: str
    id: int


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256 digest in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def create_api_key(session: Session, *, name: str, role: str) -> CreatedKey:
    """Store a new key for ``name`` with ``role``; the returned secret is not kept anywhere."""
    check_role(role)
    if not name or not name.strip():
        raise InvalidInputError("an API key needs a non-empty --name (who or what uses it)")
    labeler = session.scalar(select(Labeler).where(Labeler.name == name))
    if labeler is None:
        labeler = Labeler(name=name, role=role)
        session.add(labeler)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        labeler_id=labeler.id,
        name=name,
        prefix=key[:_SHOWN_PREFIX_CHARS],
        key_hash=hash_key(key),
        role=role,
    )
    session.add(record)
    session.flush()
    return CreatedKey(key=key, prefix=record.prefix, name=name, role=role, id=record.id)


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)).all())


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the one active key whose prefix is ``prefix`` (as printed at creation)."""
    matches = session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    ).all()
    if not matches:
        raise NotFoundError(f"no active API key with prefix {prefix!r}; see `prefloop keys list`")
    if len(matches) > 1:
        raise InvalidInputError(f"{len(matches)} active keys share prefix {prefix!r}")
    matches[0].revoked_at = datetime.now(UTC)
    return matches[0]


def count_active_keys(session: Session) -> int:
    return len(session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).all())


class Authenticator:
    """Checks presented keys against ``PREFLOOP_ADMIN_KEY`` and the store's ``api_keys``.

    Store lookups are remembered for ``cache_seconds`` (hash → principal), so a busy client does
    not cost a read transaction per request; a revoked key stops working within that time.
    """

    def __init__(self, store: Store, *, admin_key: str | None, cache_seconds: float) -> None:
        self._store = store
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def is_active(self, digest: str) -> bool:
        """Whether the key whose hash is ``digest`` still works (the admin key, or a stored key
        not revoked): a web app session ends when its key is revoked."""
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return True
        with self._store.session(readonly=True) as session:
            found = session.scalar(
                select(ApiKey.id).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
        return found is not None

    def remembered(self, key: str) -> tuple[bool, Principal | None]:
        """``(True, principal)`` when ``key`` is answered without the store (the admin key, or
        a look-up remembered less than ``cache_seconds`` ago); ``(False, None)`` otherwise."""
        digest = hash_key(key)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            return True, Principal(name="admin", role="admin", key_prefix="env")
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return True, cached[1]
        return False, None

    def _look_up(self, digest: str) -> Principal | None:
        with self._store.session(readonly=True) as session:
            record = session.scalar(
                select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
            )
            if record is None or record.role not in ROLES:
                return None
            return Principal(name=record.name, role=record.role, key_prefix=record.prefix)

    def authenticate(self, key: str) -> Principal | None:
        known, principal = self.remembered(key)
        if known:
            return principal
        digest = hash_key(key)
        now = time.monotonic()
        try:
            principal = self._look_up(digest)
        except DBAPIError as exc:  # a pooled connection the database dropped: once more
            if not exc.connection_invalidated:
                raise
            principal = self._look_up(digest)
        if self._cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:  # bound memory under a flood of wrong keys
                    self._cache.clear()
                self._cache[digest] = (now, principal)
        return principal
