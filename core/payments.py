"""A payment from one user to another: the one use case behind a transfer, a hold (a payment
reserved now, captured later, or voided) and the dry run of a transfer.

All three resolve the order the same way (:meth:`Payments.plan`), so the dry run evaluates
exactly the operation the transfer would post, and a hold reserves what the transfer would
move:

* the source must be an AVAILABLE account of the paying user (another user's account answers
  UNKNOWN_ACCOUNT, as a nonexistent one does); staff may dry-run any AVAILABLE account;
* the amount is positive, in the source asset's units;
* the destination is the payee's AVAILABLE account of that asset (opened if they have none),
  never the source itself.

A hold is seen, captured and voided by its parties (payer or payee); staff see and void any,
and capture only a hold paying a system account (a card authorization settling): staff never
move users' money to a user. The hold of an offline allowance (its destination is its own
source) is moved only by the allowance's vouchers and release.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text

from core.accounts import Account
from core.directory import Directory
from core.errors import AllowanceHold, Forbidden, UnknownAccount, UnknownHold, ValidationError
from core.policy.versions import DryRun, dry_run
from core.queries import HoldView
from core.types import (
    AccountKind,
    Actor,
    HoldResult,
    OperationResult,
    OperationType,
    PostOperation,
    transfer_legs,
)

__all__ = ["PaymentOrder", "Payments"]


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    """Pay ``amount`` (decimal text, in the source asset's units) from account
    ``from_account_id`` to user ``to_user_id``."""

    from_account_id: int
    to_user_id: uuid.UUID
    amount: str
    memo: str | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return {"memo": self.memo} if self.memo else {}


class Payments:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.ledger = directory.ledger

    async def source(self, payer: uuid.UUID | None, account_id: int) -> Account:
        """The account funds leave: the payer's own AVAILABLE account (``payer`` None: staff,
        any AVAILABLE account)."""
        account = await self.directory.account(account_id)
        if payer is not None and account.owner_id != payer:
            # the same answer as a nonexistent id: guessing ids reveals nothing
            raise UnknownAccount(f"account {account_id} does not exist", account_id=account_id)
        if account.kind is not AccountKind.AVAILABLE:
            raise ValidationError(
                "funds can only leave an AVAILABLE account here", field="from_account_id"
            )
        return account

    async def plan(
        self,
        payer: uuid.UUID | None,
        actor: Actor,
        order: PaymentOrder,
        *,
        idempotency_key: str | None = None,
    ) -> PostOperation:
        """The TRANSFER operation ``order`` stands for (see the module's rules)."""
        source = await self.source(payer, order.from_account_id)
        amount = await self.directory.parse(order.amount, source.asset)
        wallet = await self.directory.recipient(order.to_user_id, source.asset, actor)
        destination = wallet[AccountKind.AVAILABLE]
        if destination == source.id:
            raise ValidationError("cannot transfer to the same account", field="to_user_id")
        return PostOperation(
            OperationType.TRANSFER,
            transfer_legs(source.id, destination, source.asset, amount),
            actor,
            idempotency_key,
            order.metadata,
        )

    async def transfer(
        self, payer: uuid.UUID, actor: Actor, order: PaymentOrder, *, idempotency_key: str | None
    ) -> OperationResult:
        command = await self.plan(payer, actor, order, idempotency_key=idempotency_key)
        return await self.ledger.post(command)

    async def dry_run(self, payer: uuid.UUID | None, actor: Actor, order: PaymentOrder) -> DryRun:
        """What :meth:`transfer` would do now (policies, fees, postings); writes nothing."""
        return await dry_run(self.ledger, await self.plan(payer, actor, order))

    async def deadline(self, ttl: timedelta) -> datetime:
        """``ttl`` from now on the database's clock, the one that expires holds."""
        async with self.ledger.engine.connect() as conn:
            now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        return now + ttl

    async def hold(
        self,
        payer: uuid.UUID,
        actor: Actor,
        order: PaymentOrder,
        *,
        expires_at: datetime,
        idempotency_key: str | None,
    ) -> HoldResult:
        """Reserve the payment until ``expires_at``; captured later, voided, or expired."""
        debit, credit = (await self.plan(payer, actor, order)).entries
        return await self.ledger.hold(
            source=debit.account_id, destination=credit.account_id, asset=debit.asset,
            amount=debit.amount, expires_at=expires_at, actor=actor,
            idempotency_key=idempotency_key, metadata=order.metadata,
        )  # fmt: skip

    async def party_hold(
        self, hold_id: int, viewer: uuid.UUID | None, *, moving: bool = False
    ) -> HoldView:
        """The hold, if ``viewer`` is its payer or payee (``None``: staff, any hold); another
        user's hold answers UNKNOWN_HOLD, as a nonexistent one does. ``moving``: about to be
        captured or voided, which an offline allowance's hold refuses (ALLOWANCE_HOLD)."""
        hold = await self.ledger.queries.hold(hold_id)
        if moving and hold.source == hold.destination:
            raise AllowanceHold(
                f"hold {hold_id} backs an offline allowance: see /api/v1/offline/allowances",
                hold_id=hold_id,
            )
        if viewer is not None:
            source = await self.directory.account(hold.source)
            destination = await self.directory.account(hold.destination)
            if viewer not in (source.owner_id, destination.owner_id):
                raise UnknownHold(f"hold {hold_id} does not exist", hold_id=hold_id)
        return hold

    async def capture(
        self, hold_id: int, viewer: uuid.UUID | None, actor: Actor, *, amount: str | None,
        idempotency_key: str | None,
    ) -> OperationResult:  # fmt: skip
        """Post the hold, all of it or ``amount`` (decimal text; the rest is released)."""
        hold = await self.party_hold(hold_id, viewer, moving=True)
        if viewer is None and (await self.directory.account(hold.destination)).owner_id:
            raise Forbidden("staff never capture a hold that pays a user")
        units = None if amount is None else await self.directory.parse(amount, hold.asset)
        return await self.ledger.capture(
            hold_id, units, actor=actor, idempotency_key=idempotency_key
        )

    async def void(
        self, hold_id: int, viewer: uuid.UUID | None, actor: Actor, *, reason: str | None,
        idempotency_key: str | None,
    ) -> HoldResult:  # fmt: skip
        """Release the hold: the reserved funds stay with the payer."""
        await self.party_hold(hold_id, viewer, moving=True)
        return await self.ledger.void(
            hold_id, actor=actor, reason=reason, idempotency_key=idempotency_key
        )
