"""API credentials: users with a role, and API keys (hashed at rest, scoped, with a role).

An API key is shown once as ``vo_<id>_<secret>``; only ``sha256(secret)`` is stored, so a
database dump reveals no usable key. Every change is audited in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import audit
from core.errors import AlreadyExists, UnknownApiKey, UnknownUser, ValidationError
from core.storage_errors import translate
from core.types import Actor, Role

KEY_PREFIX = "vo_"
#: roles a person or service can hold (SYSTEM is the ledger's own actor, never a login)
GRANTABLE_ROLES = frozenset(Role) - {Role.SYSTEM}
USER_STATUSES = frozenset({"ACTIVE", "SUSPENDED"})


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    email: str | None
    role: Role
    status: str
    created_at: datetime

    @property
    def active(self) -> bool:
        return self.status == "ACTIVE"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: uuid.UUID
    name: str
    role: Role
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def _user(row: Any) -> User:
    return User(row.id, row.email, Role(row.role), row.status, row.created_at)


def _key(row: Any) -> ApiKey:
    return ApiKey(
        row.id,
        row.user_id,
        row.name,
        Role(row.role),
        tuple(row.scopes),
        row.created_at,
        row.expires_at,
        row.revoked_at,
    )


def _live(row: Any) -> tuple[ApiKey, User] | None:
    if row.revoked_at is not None or row.expired or row.status != "ACTIVE":
        return None
    user = User(row.user_id, row.email, Role(row.user_role), row.status, row.user_created_at)
    key = _key(row)
    if key.role not in {user.role, Role.READ_ONLY}:
        return None
    return key, user


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_key(presented: str) -> tuple[str, str] | None:
    """``vo_<16 hex>_<secret>`` → (id, secret); None if it is not shaped like a key."""
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


def _check_role(role: Role) -> Role:
    try:
        role = Role(role)
    except ValueError as exc:
        raise ValidationError(f"unknown role {role!r}", field="role") from exc
    if role not in GRANTABLE_ROLES:
        raise ValidationError(f"role {role.value} cannot be granted", field="role")
    return role


class Credentials:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- users ----------------------------------------------------------------------------
    async def create_user(self, *, email: str | None, role: Role, actor: Actor) -> User:
        role = _check_role(role)
        user_id = uuid.uuid4()
        try:
            async with self.engine.begin() as conn:
                row = (
                    await conn.execute(
                        text(
                            "INSERT INTO users (id, email, role) VALUES (:id, :email, :role) "
                            "RETURNING id, email, role, status, created_at"
                        ),
                        {"id": user_id, "email": email, "role": role.value},
                    )
                ).one()
                await audit.record(
                    conn,
                    actor,
                    "user.created",
                    "user",
                    user_id,
                    after={"email": email, "role": role.value},
                )
        except DBAPIError as exc:
            if "users_email_key" in str(exc):
                raise AlreadyExists("a user with this email exists", field="email") from exc
            raise translate(exc) from exc
        return _user(row)

    async def get_user(self, user_id: uuid.UUID) -> User:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT id, email, role, status, created_at FROM users WHERE id = :id"),
                    {"id": user_id},
                )
            ).first()
        if row is None:
            raise UnknownUser(f"user {user_id} does not exist", user_id=str(user_id))
        return _user(row)

    async def has_admin(self) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                text("SELECT 1 FROM users WHERE role = 'ADMIN' AND status = 'ACTIVE' LIMIT 1")
            )
            return found.first() is not None

    # -- API keys -------------------------------------------------------------------------
    async def create_api_key(
        self,
        *,
        user_id: uuid.UUID,
        name: str,
        scopes: tuple[str, ...],
        actor: Actor,
        role: Role | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key for ``user_id``; returns it and the plaintext, shown only now.

        The key's role is the user's, or READ_ONLY (a key can only narrow its owner)."""
        if not name.strip():
            raise ValidationError("an API key needs a name", field="name")
        if not scopes:
            raise ValidationError("an API key needs at least one scope", field="scopes")
        user = await self.get_user(user_id)
        role = user.role if role is None else _check_role(role)
        if role not in {user.role, Role.READ_ONLY}:
            raise ValidationError(
                f"a key of a {user.role.value} user can have role {user.role.value} or READ_ONLY",
                field="role",
            )
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO api_keys (id, user_id, name, role, scopes, secret_hash, "
                        "expires_at) VALUES (:id, :user, :name, :role, :scopes, :hash, :exp) "
                        "RETURNING *"
                    ),
                    {
                        "id": key_id,
                        "user": user_id,
                        "name": name,
                        "role": role.value,
                        "scopes": list(scopes),
                        "hash": _hash(secret),
                        "exp": expires_at,
                    },
                )
            ).one()
            await audit.record(
                conn,
                actor,
                "api_key.created",
                "api_key",
                key_id,
                after={"user_id": user_id, "name": name, "role": role.value, "scopes": scopes},
            )
        return _key(row), f"{KEY_PREFIX}{key_id}_{secret}"

    async def verify_api_key(self, presented: str) -> tuple[ApiKey, User] | None:
        """The key and its user if ``presented`` is a live key (``live_key``)."""
        parts = split_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        row = await self._key_row(key_id)
        if row is None or not hmac.compare_digest(bytes(row.secret_hash), _hash(secret)):
            return None
        return _live(row)

    async def live_key(self, key_id: str) -> tuple[ApiKey, User] | None:
        """The key ``key_id`` and its user while the key may still be used: not revoked,
        not expired, its user ACTIVE, and its role still one the user may grant (a key of
        a demoted user dies). Bearer tokens minted from a key ask this on every request
        (through a short cache), so they die with their key."""
        row = await self._key_row(key_id)
        return None if row is None else _live(row)

    async def _key_row(self, key_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text(
                        "SELECT k.*, u.email, u.role AS user_role, u.status, "
                        "u.created_at AS user_created_at, "
                        "(k.expires_at IS NOT NULL AND k.expires_at <= now()) AS expired "
                        "FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = :id"
                    ),
                    {"id": key_id},
                )
            ).first()

    async def revoke_api_key(self, key_id: str, *, actor: Actor) -> ApiKey:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) "
                        "WHERE id = :id RETURNING *"
                    ),
                    {"id": key_id},
                )
            ).first()
            if row is None:
                raise UnknownApiKey(f"API key {key_id} does not exist", key_id=key_id)
            await audit.record(conn, actor, "api_key.revoked", "api_key", key_id)
        return _key(row)

    async def narrow_api_key(
        self, key_id: str, scopes: tuple[str, ...], *, reason: str, actor: Actor
    ) -> ApiKey:
        """Keep only ``scopes`` of the key's scopes (a key can be narrowed, never widened;
        tokens minted from it lose the dropped scopes too)."""
        if not scopes:
            raise ValidationError(
                "a key keeps at least one scope (revoke it instead)", field="scopes"
            )
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM api_keys WHERE id = :id FOR UPDATE"), {"id": key_id}
                )
            ).first()
            if row is None:
                raise UnknownApiKey(f"API key {key_id} does not exist", key_id=key_id)
            held = set(row.scopes)
            if "*" not in held and not set(scopes) <= held:
                raise ValidationError(
                    f"a key can only be narrowed: it holds {sorted(held)}", field="scopes"
                )
            row = (
                await conn.execute(
                    text("UPDATE api_keys SET scopes = :scopes WHERE id = :id RETURNING *"),
                    {"id": key_id, "scopes": sorted(set(scopes))},
                )
            ).one()
            await audit.record(
                conn,
                actor,
                "api_key.narrowed",
                "api_key",
                key_id,
                before={"scopes": sorted(held)},
                after={"scopes": sorted(set(scopes))},
                reason=reason,
            )
        return _key(row)

    async def update_user(
        self,
        user_id: uuid.UUID,
        *,
        status: str | None,
        role: Role | None,
        reason: str,
        actor: Actor,
    ) -> User:
        """Suspend or reactivate a user, or change their role (audited with the reason).
        Their keys and tokens follow within the authentication cache window."""
        if status is not None and status not in USER_STATUSES:
            raise ValidationError(f"status is one of {sorted(USER_STATUSES)}", field="status")
        new_role = None if role is None else _check_role(role)
        async with self.engine.begin() as conn:
            before = (
                await conn.execute(
                    text(
                        "SELECT id, email, role, status, created_at FROM users "
                        "WHERE id = :id FOR UPDATE"
                    ),
                    {"id": user_id},
                )
            ).first()
            if before is None:
                raise UnknownUser(f"user {user_id} does not exist", user_id=str(user_id))
            row = (
                await conn.execute(
                    text(
                        "UPDATE users SET status = COALESCE(:status, status), "
                        "role = COALESCE(:role, role) WHERE id = :id "
                        "RETURNING id, email, role, status, created_at"
                    ),
                    {
                        "id": user_id,
                        "status": status,
                        "role": None if new_role is None else new_role.value,
                    },
                )
            ).one()
            await audit.record(
                conn,
                actor,
                "user.updated",
                "user",
                user_id,
                before={"role": before.role, "status": before.status},
                after={"role": row.role, "status": row.status},
                reason=reason,
            )
        return _user(row)

    async def record_auth_failures(self, subject: str, ip: str, count: int, seconds: int) -> None:
        """Audit repeated failed authentication of ``subject`` (``ip:<addr>`` or
        ``key:<id>``): ``count`` failures within ``seconds``."""
        async with self.engine.begin() as conn:
            await audit.record(
                conn,
                Actor("api:authentication", Role.SYSTEM, ip),
                "auth.failures",
                "client",
                subject,
                after={"failures": count, "within_seconds": seconds},
            )
