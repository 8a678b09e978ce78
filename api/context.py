"""The per-request context a controller gets: who calls, from where, and the ownership
rules (a USER reaches only their own accounts; staff readers see every account)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import NotAuthorizedException

from api.auth import Principal
from api.idempotency import Attempt, idempotent
from api.services import Services
from core.accounts import Account
from core.errors import UnknownAccount, UnknownUser
from core.types import Actor, Role


def client_ip(request: Request[Any, Any, Any], trusted_proxy: bool) -> str | None:
    if trusted_proxy and (forwarded := request.headers.get("x-forwarded-for")):
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else None


@dataclass(frozen=True, slots=True)
class Ctx:
    request: Request[Any, Any, Any]
    principal: Principal
    svc: Services
    actor: Actor

    @property
    def is_user(self) -> bool:
        return self.principal.role is Role.USER

    @property
    def viewer(self) -> uuid.UUID | None:
        """Whom core limits what it shows and moves to: a USER's own id; ``None`` for staff
        (their limits are the route's guards)."""
        return self.principal.user_id if self.is_user else None

    def owns(self, account: Account) -> bool:
        return account.owner_id == self.principal.user_id

    def check_user(self, user_id: uuid.UUID) -> None:
        """A USER may only address themselves (others look nonexistent)."""
        if self.is_user and user_id != self.principal.user_id:
            raise UnknownUser(f"user {user_id} does not exist", user_id=str(user_id))

    async def once(
        self,
        body: Any,
        run: Callable[[Attempt], Awaitable[Any]],
        *,
        status_code: int = 201,
        pin: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        stored: Callable[[Any], Any] = msgspec.to_builtins,
    ) -> Response[Any]:
        """Run a creating request under its ``Idempotency-Key`` (see ``api.idempotency``)."""
        return await idempotent(
            self.request,
            self.svc.idempotency,
            self.principal.client,
            body,
            run,
            status_code=status_code,
            pin=pin,
            stored=stored,
        )

    async def sees(self, account_id: int) -> bool:
        """Whether the caller may read the account's id and balance: staff readers every
        account, a USER their own (``api.render.Sees``)."""
        return not self.is_user or self.owns(await self.svc.account(account_id))

    async def readable_account(self, account_id: int) -> Account:
        account = await self.svc.account(account_id)
        if self.is_user and not self.owns(account):
            # the same answer as a nonexistent id: guessing ids reveals nothing
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        return account

    async def source_account(self, account_id: int) -> Account:
        """An account funds may leave at the caller's request: the caller's own AVAILABLE
        account (staff act on users' accounts through their own endpoints)."""
        return await self.svc.payments.source(self.principal.user_id, account_id)


def provide_ctx(request: Request[Any, Any, Any]) -> Ctx:
    principal = request.scope.get("user")
    if not isinstance(principal, Principal):  # pragma: no cover - guards run first
        raise NotAuthorizedException()
    svc: Services = request.app.state.services
    return Ctx(
        request, principal, svc, principal.actor(client_ip(request, svc.settings.trusted_proxy))
    )
