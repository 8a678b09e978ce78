"""Authentication (JWT bearer via ``litestar.security.jwt``, or an ``X-API-Key``) and
authorisation (one guard factory; every route states who may call it).

Both credentials resolve to a ``Principal``: the user, the role, the scopes and the
*client* (``u:<user id>`` for a person's token, ``k:<key id>`` for an API key or a token
minted from one) — the client scopes idempotency keys and rate limits.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token

from api.throttle import ABUSE_FAILURES, ABUSE_WINDOW, FailureThrottle
from core.credentials import ApiKey, Credentials, User, split_key
from core.errors import UnknownUser
from core.types import Actor, Role

API_KEY_HEADER = "X-API-Key"
#: how long a verified bearer token is remembered (never past its ``exp``)
TOKEN_CACHE_SECONDS = 300.0

#: scopes an API key may carry; a person's token carries "*"
SCOPES = frozenset({"read", "payments", "issuance", "admin", "*"})

USER, ADMIN, OPS, COMPLIANCE, READ_ONLY, AUDITOR = (
    Role.USER, Role.ADMIN, Role.OPS, Role.COMPLIANCE, Role.READ_ONLY, Role.AUDITOR,
)  # fmt: skip
#: staff who may read every account
STAFF_READERS = frozenset({ADMIN, OPS, COMPLIANCE, READ_ONLY, AUDITOR})
EVERYONE = STAFF_READERS | {USER}


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    role: Role
    scopes: frozenset[str]
    #: the idempotency / rate-limit namespace of this caller
    client: str
    key_id: str | None = None
    #: when the credential this principal comes from stops (an API key's ``expires_at``,
    #: a person's first token's ``exp``); None: until revoked. A token minted for this
    #: principal never outlives it.
    expires_at: datetime | None = None

    def may(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes

    def actor(self, ip: str | None) -> Actor:
        who = f"user:{self.user_id}" + (f"/key:{self.key_id}" if self.key_id else "")
        return Actor(who, self.role, ip)


@dataclass(frozen=True, slots=True)
class Access:
    """A route's guard decision: the roles allowed and the scope a key needs."""

    roles: frozenset[Role]
    #: None: any credential of an allowed role (e.g. exchanging a key for a token)
    scope: str | None


Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def allow(roles: Iterable[Role], *, scope: str | None) -> Guard:
    """The guard of a route: the caller's role must be in ``roles`` and hold ``scope``."""
    access = Access(frozenset(roles), scope)
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope}")

    # async on purpose: Litestar runs a sync guard in a worker thread (a thread hop and
    # a handoff back to the event loop on every request)
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            raise NotAuthorizedException()
        if principal.role not in access.roles:
            raise PermissionDeniedException(f"role {principal.role.value} may not do this")
        if access.scope is not None and not principal.may(access.scope):
            raise PermissionDeniedException(f"this credential lacks the {scope!r} scope")

    guard.access = access  # type: ignore[attr-defined]
    return guard


def access_of(handler: BaseRouteHandler) -> Access | str | None:
    """The declared decision of a route: an ``Access``, "public", "webhook" (signed by
    the provider), or None (a bug: ``create_app`` refuses to start)."""
    if handler.opt.get("webhook"):
        return "webhook"
    if handler.opt.get("public"):
        return "public"
    if getattr(handler, "http_methods", None) == {
        "OPTIONS"
    }:  # Litestar's automatic preflight answer
        return "public"
    for guard in handler.resolve_guards():
        found = getattr(getattr(guard, "func", guard), "access", None)
        if isinstance(found, Access):
            return found
    return None


#: route ``opt`` of a route anyone may call without credentials
PUBLIC: dict[str, Any] = {"public": True, "exclude_from_auth": True}


class _TtlCache:
    """Tiny TTL cache: credentials are checked against the database at most every few
    seconds per credential (a revoked key or suspended user stops within ``ttl``)."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self.items: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any:
        hit = self.items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        if len(self.items) >= self.size:
            self.items.clear()
        self.items[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)


class Authenticator:
    """Resolves credentials to principals (shared by the middleware and the token route)."""

    def __init__(self, credentials: Credentials, ttl: float = 5.0) -> None:
        self.credentials = credentials
        self.users = _TtlCache(ttl)
        self.keys = _TtlCache(ttl)
        #: key id → (key, user) while the key is live, False once it is not
        self.key_states = _TtlCache(ttl)
        #: bearer tokens whose signature and claims were verified, until they expire
        #: (at most ``TOKEN_CACHE_SECONDS``): a client reuses its token, and HS256
        #: verification was the largest CPU item of an authenticated request
        self.tokens = _TtlCache(TOKEN_CACHE_SECONDS)

    def verified(self, encoded: str, decode: Callable[[], Token]) -> Token:
        """The decoded ``encoded`` token: from the cache, else ``decode()`` (raises when
        invalid; only valid tokens are remembered, never past their ``exp``)."""
        token = self.tokens.get(encoded)
        if isinstance(token, Token):
            return token
        token = decode()
        left = (token.exp - datetime.now(UTC)).total_seconds()
        if left > 0:
            self.tokens.put(encoded, token, min(left, TOKEN_CACHE_SECONDS))
        return token

    async def user(self, user_id: uuid.UUID) -> User | None:
        cached = self.users.get(str(user_id))
        if cached is None:
            try:
                cached = await self.credentials.get_user(user_id)
            except UnknownUser:
                return None
            self.users.put(str(user_id), cached)
        return cached if isinstance(cached, User) and cached.active else None

    async def from_api_key(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).hexdigest()
        cached = self.keys.get(digest)
        if cached is None:
            found = await self.credentials.verify_api_key(presented)
            if found is None:
                return None
            key, user = found
            cached = Principal(
                user.id, key.role, frozenset(key.scopes), f"k:{key.id}", key.id, key.expires_at
            )
            self.keys.put(digest, cached)
        return cached if isinstance(cached, Principal) else None

    async def live_key(self, key_id: str) -> tuple[ApiKey, User] | None:
        cached = self.key_states.get(key_id)
        if cached is None:
            cached = await self.credentials.live_key(key_id) or False
            self.key_states.put(key_id, cached)
        return cached or None

    def forget(self) -> None:
        """Drop what this process remembers of users and keys (after a change made here;
        other processes follow within ``ttl``)."""
        self.users.items.clear()
        self.keys.items.clear()
        self.key_states.items.clear()

    async def from_token(self, token: Token) -> Principal | None:
        """The principal of a verified token, as its origin stands NOW: a token minted from
        an API key lives only while the key does (revoked, expired, its user suspended or
        demoted: refused) and holds at most the key's current scopes; a person's token
        only while the user is ACTIVE in a role the token names."""
        try:
            user_id = uuid.UUID(token.sub)
            role = Role(token.extras.get("role", ""))
        except ValueError:
            return None
        scopes = frozenset(map(str, token.extras.get("scopes") or ["*"]))
        key_id = token.extras.get("kid")
        if key_id:
            live = await self.live_key(str(key_id))
            if live is None:
                return None
            key, owner = live
            scopes = _narrowed(scopes, frozenset(key.scopes))
            if owner.id != user_id or role not in {key.role, Role.READ_ONLY} or not scopes:
                return None
            return Principal(user_id, role, scopes, f"k:{key_id}", str(key_id), key.expires_at)
        user = await self.user(user_id)
        if user is None or role not in {user.role, Role.READ_ONLY}:
            return None
        origin = token.extras.get("oexp")
        expires = datetime.fromtimestamp(origin, UTC) if isinstance(origin, int) else token.exp
        return Principal(user_id, role, scopes, f"u:{user_id}", None, expires)


def _narrowed(held: frozenset[str], allowed: frozenset[str]) -> frozenset[str]:
    if "*" in allowed:
        return held
    if "*" in held:
        return allowed
    return held & allowed


class AuthMiddleware(JWTAuthenticationMiddleware):
    """``X-API-Key`` first, else ``Authorization: Bearer <JWT>`` (Litestar's JWT checks).

    A presented credential that fails counts against the client address and the key id
    (``api.throttle``): over the limit, the next attempt is 429 before any lookup."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        presented = connection.headers.get(API_KEY_HEADER)
        header = connection.headers.get(self.auth_header, "")
        scheme, _, _ = header.partition(" ")
        if not presented and scheme.lower() != "bearer":
            raise NotAuthorizedException("bearer token or API key required")
        ip = connection.client.host if connection.client else "unknown"
        subjects = [f"ip:{ip}"]
        parts = split_key(presented) if presented else None
        if parts is not None:
            subjects.append(f"key:{parts[0]}")
        failures: FailureThrottle = connection.app.state.auth_failures
        if await failures.blocked(*subjects):
            raise TooManyRequestsException("too many failed authentications; wait a minute")
        try:
            if presented:
                auth: Authenticator = connection.app.state.authenticator
                principal = await auth.from_api_key(presented)
                if principal is None:
                    raise NotAuthorizedException("invalid API key")
                return AuthenticationResult(user=principal, auth=None)
            return await super().authenticate_request(connection)
        except NotAuthorizedException:
            await note_failures(connection, *subjects)
            raise

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """Litestar's checks (signature, ``exp``, ``nbf``, issuer) once per token string;
        the user behind it is re-checked on every request (``Authenticator.user``)."""
        auth: Authenticator = connection.app.state.authenticator
        token = auth.verified(
            encoded_token,
            partial(
                self.token_cls.decode,
                encoded_token=encoded_token,
                secret=self.token_secret,
                algorithm=self.algorithm,
                audience=self.token_audience,
                issuer=self.token_issuer,
                require_claims=self.require_claims,
                verify_exp=self.verify_expiry,
                verify_nbf=self.verify_not_before,
                strict_audience=self.strict_audience,
            ),
        )
        principal = await auth.from_token(token)
        if principal is None:
            raise NotAuthorizedException()
        return AuthenticationResult(user=principal, auth=token)


async def note_failures(connection: ASGIConnection[Any, Any, Any, Any], *subjects: str) -> None:
    """Count a failed authentication of each subject; audit those that reached the abuse
    threshold (``api.throttle``)."""
    failures: FailureThrottle = connection.app.state.auth_failures
    ip = connection.client.host if connection.client else "unknown"
    for subject in await failures.failed(*subjects):
        credentials: Credentials = connection.app.state.authenticator.credentials
        await credentials.record_auth_failures(subject, ip, ABUSE_FAILURES, ABUSE_WINDOW)


async def _retrieve_principal(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> Principal | None:
    auth: Authenticator = connection.app.state.authenticator
    return await auth.from_token(token)


def jwt_auth(secret: str, ttl_seconds: int) -> JWTAuth[Principal, Token]:
    return JWTAuth[Principal, Token](
        token_secret=secret,
        retrieve_user_handler=_retrieve_principal,
        authentication_middleware_class=AuthMiddleware,
        default_token_expiration=timedelta(seconds=ttl_seconds),
        exclude_opt_key="exclude_from_auth",
        exclude=["^/schema", "^/metrics"],
        openapi_security_scheme_name="BearerToken",
        accepted_issuers=["valueos"],
    )


def issue_token(
    config: JWTAuth[Principal, Token], principal: Principal, ttl: timedelta | None = None
) -> str:
    """A bearer token for ``principal``, living ``ttl`` (default: the configured lifetime)
    but never past ``principal.expires_at``; that end travels in the token (``oexp``), so
    refreshing with it can never extend it. Raises ``NotAuthorizedException`` when the
    origin has already ended."""
    ttl = ttl or config.default_token_expiration
    origin = principal.expires_at
    if origin is not None:
        left = origin - datetime.now(UTC)
        if left.total_seconds() < 1:
            raise NotAuthorizedException("the credential has expired")
        ttl = min(ttl, left)
    return config.create_token(
        identifier=str(principal.user_id),
        token_expiration=ttl,
        token_issuer="valueos",  # noqa: S106 - the issuer name, not a secret
        token_extras={
            "role": principal.role.value,
            "scopes": sorted(principal.scopes),
            **({"kid": principal.key_id} if principal.key_id else {}),
            **({"oexp": int(origin.timestamp())} if origin is not None else {}),
        },
    )
