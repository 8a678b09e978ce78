"""Credits: mint (issuance -> a user's AVAILABLE), moves between one user's compartments, burn
(an AVAILABLE account -> issuance). The use cases behind ``/api/v1/credits`` (the transfer
between users is :mod:`core.payments`).

Who may do what is part of the rules here: a USER moves only their own credits and only
AVAILABLE -> LOCKED; staff unlock (LOCKED -> AVAILABLE) with a reason; a USER burns from their
own AVAILABLE account, staff from any AVAILABLE account with a reason.
"""

from __future__ import annotations

import uuid

from core.directory import Directory
from core.errors import ReasonRequired, UnknownUser, ValidationError
from core.payments import Payments
from core.types import (
    AccountKind,
    Actor,
    OperationResult,
    OperationType,
    PostOperation,
    Role,
    SystemAccount,
    transfer_legs,
)

__all__ = ["MOVES", "Credits"]

#: compartment moves: (from, to) -> (operation type, roles allowed, reason required)
MOVES: dict[tuple[AccountKind, AccountKind], tuple[OperationType, frozenset[Role], bool]] = {
    (AccountKind.AVAILABLE, AccountKind.LOCKED): (
        OperationType.LOCK, frozenset({Role.USER, Role.ADMIN, Role.OPS}), False,
    ),
    (AccountKind.LOCKED, AccountKind.AVAILABLE): (
        OperationType.UNLOCK, frozenset({Role.ADMIN, Role.OPS}), True,
    ),
}  # fmt: skip


class Credits:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.ledger = directory.ledger

    async def mint(
        self,
        actor: Actor,
        *,
        user_id: uuid.UUID,
        asset: str,
        amount: str,
        memo: str | None,
        idempotency_key: str | None,
    ) -> OperationResult:
        """Issue ``amount`` of ``asset`` into ``user_id``'s AVAILABLE compartment."""
        units = await self.directory.parse(amount, asset)
        wallet = await self.directory.recipient(user_id, asset, actor)
        issuance = await self.directory.system(asset, SystemAccount.ISSUANCE, actor)
        legs = transfer_legs(issuance, wallet[AccountKind.AVAILABLE], asset, units)
        metadata = {"memo": memo} if memo else {}
        return await self.ledger.post(
            PostOperation(OperationType.MINT, legs, actor, idempotency_key, metadata)
        )

    async def move(
        self,
        caller: uuid.UUID,
        actor: Actor,
        *,
        owner: uuid.UUID | None,
        asset: str,
        from_kind: AccountKind,
        to_kind: AccountKind,
        amount: str,
        reason: str | None,
        idempotency_key: str | None,
    ) -> OperationResult:
        """Between two compartments of ``owner`` (default: the caller), as :data:`MOVES`
        allows the actor's role."""
        owner = owner or caller
        if actor.role is Role.USER and owner != caller:  # others look nonexistent
            raise UnknownUser(f"user {owner} does not exist", user_id=str(owner))
        rule = MOVES.get((from_kind, to_kind))
        if rule is None:
            raise ValidationError(
                f"no move from {from_kind.value} to {to_kind.value}", field="to_kind"
            )
        type_, roles, needs_reason = rule
        if actor.role not in roles:
            raise ValidationError(
                f"a {actor.role.value} cannot move {from_kind.value} to {to_kind.value}",
                field="to_kind",
            )
        if needs_reason and not reason:
            raise ReasonRequired("this move needs a reason", field="reason")
        units = await self.directory.parse(amount, asset)
        wallet = await self.directory.wallet(owner, asset, actor)
        legs = transfer_legs(wallet[from_kind], wallet[to_kind], asset, units)
        return await self.ledger.post(
            PostOperation(type_, legs, actor, idempotency_key, reason=reason)
        )

    async def burn(
        self,
        caller: uuid.UUID,
        actor: Actor,
        *,
        account_id: int,
        amount: str,
        reason: str | None,
        idempotency_key: str | None,
    ) -> OperationResult:
        """Retire ``amount`` from an AVAILABLE account back to issuance: a USER from their own,
        staff from any, with a reason."""
        if actor.role is Role.USER:
            account = await Payments(self.directory).source(caller, account_id)
        else:
            account = await self.directory.account(account_id)
            if account.kind is not AccountKind.AVAILABLE:
                raise ValidationError("only AVAILABLE credits can be burnt", field="account_id")
            if not reason:
                raise ReasonRequired("burning a user's credits needs a reason", field="reason")
        units = await self.directory.parse(amount, account.asset)
        issuance = await self.directory.system(account.asset, SystemAccount.ISSUANCE, actor)
        legs = transfer_legs(account.id, issuance, account.asset, units)
        return await self.ledger.post(
            PostOperation(OperationType.BURN, legs, actor, idempotency_key, reason=reason)
        )
