"""Bodies of the user, API key and token endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from api.schemas.common import Create, Reason
from core.types import Role


class UserCreate(Create):
    role: Role = Role.USER
    email: Annotated[str, Meta(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


class UserUpdate(Create):
    """Suspend or reactivate a user, or change their role; their keys and tokens follow
    within the authentication cache window (5 s)."""

    reason: Reason
    status: Literal["ACTIVE", "SUSPENDED"] | None = None
    role: Role | None = None


class UserRead(Struct):
    id: uuid.UUID
    email: str | None
    role: Role
    status: str
    created_at: datetime


class MeRead(Struct):
    user_id: uuid.UUID
    role: Role
    scopes: list[str]
    client: str


class ApiKeyCreate(Create):
    user_id: uuid.UUID
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[str], Meta(min_length=1, max_length=8)]
    role: Role | None = None
    expires_at: datetime | None = None


class ApiKeyNarrow(Create):
    """The scopes the key keeps (a subset of what it holds)."""

    scopes: Annotated[list[str], Meta(min_length=1, max_length=8)]
    reason: Reason


class ApiKeyRead(Struct):
    id: str
    user_id: uuid.UUID
    name: str
    role: Role
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    #: the key itself, shown once at creation (null on an idempotent replay)
    key: str | None = None


class TokenRead(Struct):
    access_token: str
    token_type: str
    expires_in: int
