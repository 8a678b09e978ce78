"""Credentials: exchange a credential for a short-lived bearer token; API keys for POS
terminals and services (created by an admin, shown once, revocable)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from api.auth import ADMIN, EVERYONE, SCOPES, allow, issue_token
from api.context import Ctx
from api.idempotency import Attempt
from api.schemas.users import ApiKeyCreate, ApiKeyNarrow, ApiKeyRead, TokenRead
from core.credentials import ApiKey
from core.errors import ValidationError

KeyId = Annotated[str, PathParameter(pattern=r"^[a-f0-9]{16}$")]


def _read(key: ApiKey, secret: str | None = None) -> ApiKeyRead:
    return ApiKeyRead(
        key.id,
        key.user_id,
        key.name,
        key.role,
        list(key.scopes),
        key.created_at,
        key.expires_at,
        key.revoked_at,
        secret,
    )


def _without_secret(read: ApiKeyRead) -> Any:
    return msgspec.to_builtins(msgspec.structs.replace(read, key=None))


class CredentialController(Controller):
    path = "/api/v1"
    tags = ["auth"]

    @post(
        "/auth/token",
        guards=[allow(EVERYONE, scope=None)],
        status_code=200,
        opt={"rate_group": "auth"},
    )
    async def token(self, ctx: NamedDependency[Ctx]) -> TokenRead:
        """A bearer token for the calling credential (same user, role and scopes), living
        the configured lifetime but never past the credential's own end: a key's
        ``expires_at``, or the first token's ``exp`` when a token is refreshed."""
        ttl = timedelta(seconds=ctx.svc.settings.token_ttl_seconds)
        if ctx.principal.expires_at is not None:
            ttl = min(ttl, ctx.principal.expires_at - datetime.now(UTC))
        jwt = ctx.request.app.state.jwt_auth
        token = issue_token(jwt, ctx.principal, ttl)
        return TokenRead(token, "bearer", max(0, int(ttl.total_seconds())))

    @post("/api-keys", guards=[allow({ADMIN}, scope="admin")], opt={"rate_group": "admin"})
    async def create_key(
        self, ctx: NamedDependency[Ctx], data: JSONBody[ApiKeyCreate]
    ) -> Response[ApiKeyRead]:
        """Create an API key; the ``key`` is returned once (a replay returns null)."""
        unknown = sorted(set(data.scopes) - SCOPES)
        if unknown:
            raise ValidationError(f"unknown scopes {unknown}", field="scopes")

        async def run(_: Attempt) -> ApiKeyRead:
            key, secret = await ctx.svc.credentials.create_api_key(
                user_id=data.user_id,
                name=data.name,
                scopes=tuple(sorted(set(data.scopes))),
                role=data.role,
                expires_at=data.expires_at,
                actor=ctx.actor,
            )
            return _read(key, secret)

        return await ctx.once(data, run, stored=_without_secret)

    @post(
        "/api-keys/{key_id:str}/revoke",
        guards=[allow({ADMIN}, scope="admin")],
        status_code=200,
        opt={"rate_group": "admin"},
    )
    async def revoke_key(self, ctx: NamedDependency[Ctx], key_id: KeyId) -> ApiKeyRead:
        key = await ctx.svc.credentials.revoke_api_key(key_id, actor=ctx.actor)
        ctx.request.app.state.authenticator.forget()
        return _read(key)

    @patch(
        "/api-keys/{key_id:str}",
        guards=[allow({ADMIN}, scope="admin")],
        opt={"rate_group": "admin"},
    )
    async def narrow_key(
        self, ctx: NamedDependency[Ctx], key_id: KeyId, data: JSONBody[ApiKeyNarrow]
    ) -> ApiKeyRead:
        """Narrow a key's scopes; tokens minted from it lose the dropped scopes too."""
        unknown = sorted(set(data.scopes) - SCOPES)
        if unknown:
            raise ValidationError(f"unknown scopes {unknown}", field="scopes")
        key = await ctx.svc.credentials.narrow_api_key(
            key_id, tuple(data.scopes), reason=data.reason, actor=ctx.actor
        )
        ctx.request.app.state.authenticator.forget()
        return _read(key)


ROUTES = [CredentialController]
