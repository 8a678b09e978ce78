"""Core results → response Structs (amounts formatted in their asset's scale)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from api.schemas.accounts import HistoryEntryRead, HistoryRead
from api.schemas.credits import EntryRead, OperationRead
from api.schemas.deposits import SagaOperationRead, TransactionRead
from api.schemas.holds import HoldRead
from api.schemas.policies import DenialRead, DryRunRead, FeeRead, PolicyVersionRead, PostingRead
from api.services import Services
from core.errors import PolicyDenied
from core.flows import Saga
from core.policy.versions import DryRun
from core.queries import HistoryPage, HoldView, OperationView
from core.types import HoldResult, OperationResult, OperationType

POSTINGS = Counter("valueos_api_postings", "Ledger operations posted through the API", ["type"])

#: whether the caller may read an account (``Ctx.sees``): an entry of an account it may
#: not read shows only the asset and the signed amount — no account id, no balance
Sees = Callable[[int], Awaitable[bool]]


async def everything(_: int) -> bool:
    """The viewer of a trusted system caller (the payment provider's webhook)."""
    return True


async def _entry(
    svc: Services, sees: Sees, seq: int, account: int, asset: str, amount: int, after: int
) -> EntryRead:
    if not await sees(account):
        return EntryRead(seq, None, asset, await svc.fmt(amount, asset), None)
    return EntryRead(seq, account, asset, await svc.fmt(amount, asset), await svc.fmt(after, asset))


async def operation(svc: Services, result: OperationResult, sees: Sees) -> OperationRead:
    if not result.replayed:
        POSTINGS.labels(result.type.value).inc()
    entries = [
        await _entry(svc, sees, e.seq, e.account_id, e.asset, e.amount, e.balance_after)
        for e in result.entries
    ]
    return OperationRead(
        id=result.operation_id,
        type=result.type,
        epoch=result.epoch,
        created_at=result.created_at,
        entries=entries,
        reverses=result.reverses,
        hold_id=result.hold_id,
    )


async def history(svc: Services, account_id: int, asset: str, page: HistoryPage) -> HistoryRead:
    """One page of an account's entries, amounts and ``balance_after`` in the asset's scale."""
    return HistoryRead(
        account_id=account_id,
        asset=asset,
        entries=[
            HistoryEntryRead(
                e.seq,
                e.operation_id,
                e.operation_type,
                await svc.fmt(e.amount, asset),
                await svc.fmt(e.balance_after, asset),
                e.epoch,
                e.created_at,
            )
            for e in page.entries
        ],
        next_cursor=page.next_cursor,
    )


async def operation_view(svc: Services, view: OperationView, sees: Sees) -> OperationRead:
    entries = [
        await _entry(svc, sees, seq, account, asset, amount, after)
        for seq, account, asset, amount, after in view.entries
    ]
    return OperationRead(
        id=view.id,
        type=view.type,
        epoch=view.epoch,
        created_at=view.created_at,
        entries=entries,
        reverses=view.reverses,
        reversed_by=view.reversed_by,
        reason=view.reason,
        transaction_id=view.saga_id,
    )


async def hold(svc: Services, h: HoldResult | HoldView) -> HoldRead:
    hold_id = h.hold_id if isinstance(h, HoldResult) else h.id
    return HoldRead(
        id=hold_id,
        status=h.status,
        source_account_id=h.source,
        destination_account_id=h.destination,
        asset=h.asset,
        amount=await svc.fmt(h.amount, h.asset),
        remaining=await svc.fmt(h.remaining, h.asset),
        expires_at=h.expires_at,
    )


def transaction(tx: Saga) -> TransactionRead:
    return TransactionRead(
        id=tx.id,
        owner_id=tx.owner_id,
        type=tx.type.value,
        status=tx.status.value,
        external_reference=tx.external_reference,
        created_at=tx.created_at,
        operations=[SagaOperationRead(i, t, s) for i, t, s in tx.operations],
    )


async def dry_run(svc: Services, type_: OperationType, outcome: DryRun, sees: Sees) -> DryRunRead:
    """What an operation would do: allowed or the denial (code, rule, policy version), its
    fees and postings (of accounts the caller may not read: the asset and amount only)."""
    denial = None
    if outcome.error is not None:
        err = outcome.error
        denied = isinstance(err, PolicyDenied)
        denial = DenialRead(
            err.code,
            err.message,
            err.details.get("policy_id") if denied else None,
            err.details.get("version") if denied else None,
            err.details.get("rule") if denied else None,
            err.details.get("rule_kind") if denied else None,
        )
    return DryRunRead(
        allowed=outcome.allowed,
        operation_type=type_,
        denial=denial,
        policies=[PolicyVersionRead(p, v) for p, v in outcome.policies],
        fees=[
            FeeRead(asset, await svc.fmt(fee, asset), account)
            for asset, fee, account in outcome.fees
        ],
        postings=[
            PostingRead(account, asset, await svc.fmt(amt, asset), await svc.fmt(after, asset))
            if await sees(account)
            else PostingRead(None, asset, await svc.fmt(amt, asset), None)
            for account, asset, amt, after in outcome.entries
        ],
    )
