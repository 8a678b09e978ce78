"""Turn a batch of commands into a write plan — pure, given the locked state.

The repository loads and locks what the batch touches (balance rows, holds,
operations to reverse, stored idempotency outcomes), then ``plan_batch`` decides
every command's fate against an in-memory ``BalanceBook``. Nothing here does I/O,
so every rule is unit-testable; the repository only writes what the plan says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from core.errors import (
    AlreadyReversed,
    HoldExceeded,
    HoldNotPending,
    IdempotencyConflict,
    InvalidAmount,
    LedgerError,
    LinkedOperationFailed,
    NotReversible,
    PolicyDenied,
    ReasonRequired,
    UnknownHold,
    UnknownOperation,
    ValidationError,
    error_from_dict,
)
from core.money import INT64_MAX, check_int64
from core.policy.rules import Applied, PolicyContext
from core.posting import BalanceBook, validate_entries
from core.types import (
    REASON_REQUIRED,
    AccountStatus,
    Actor,
    CaptureHold,
    Command,
    CreateHold,
    EntrySpec,
    HoldResult,
    HoldStatus,
    OperationResult,
    OperationType,
    PostedEntry,
    PostOperation,
    Result,
    ReverseOperation,
    Side,
    VoidHold,
    transfer_legs,
)


@dataclass(frozen=True, slots=True)
class HoldRow:
    id: int
    source: int
    destination: int
    asset: str
    amount: int
    remaining: int
    status: HoldStatus
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class OriginalOperation:
    """An operation someone asks to reverse, with its entries (signed amounts)."""

    id: int
    type: OperationType
    entries: tuple[tuple[int, str, int], ...]
    reversed_by: int | None


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    request_hash: bytes
    outcome: dict[str, Any]


@dataclass(slots=True)
class PlannedOperation:
    item: int
    type: OperationType
    actor: Actor
    idempotency_key: str | None
    metadata: dict[str, Any]
    reason: str | None
    saga_id: UUID | None
    reverses: int | None
    hold_id: int | None
    #: (account_id, asset, signed amount, balance_after)
    entries: list[tuple[int, str, int, int]]
    id: int = 0
    seqs: list[int] = field(default_factory=list)
    #: the policy versions that allowed it, its fees and limit usage
    policy: Applied | None = None


@dataclass(slots=True)
class PlannedHold:
    item: int
    command: CreateHold
    id: int = 0


@dataclass(slots=True)
class HoldChange:
    """A state change of an existing hold (capture, void, expiry)."""

    item: int
    hold: HoldRow
    status: HoldStatus
    #: captured by this change (0 for a void or an expiry)
    captured: int
    #: left reserved after it (a capture that keeps the rest: > 0, the hold stays PENDING)
    remaining: int = 0


@dataclass(slots=True)
class FailedSagaOperation:
    """A failed request that belongs to a transaction saga: recorded as a FAILED operation."""

    command: PostOperation
    error: LedgerError


@dataclass(frozen=True, slots=True)
class SameAs:
    """Outcome of a repeated key inside one batch: the answer of item ``item``, replayed."""

    item: int


@dataclass(frozen=True, slots=True)
class Captured:
    change: HoldChange
    operation: PlannedOperation


@dataclass(slots=True)
class Plan:
    operations: list[PlannedOperation] = field(default_factory=list)
    new_holds: list[PlannedHold] = field(default_factory=list)
    hold_changes: list[HoldChange] = field(default_factory=list)
    failed_saga_operations: list[FailedSagaOperation] = field(default_factory=list)
    #: per item: a planned op/hold/hold-change, an error, or a replayed result
    outcomes: list[Any] = field(default_factory=list)
    #: items whose outcome must be stored under their idempotency key
    keyed_items: list[int] = field(default_factory=list)
    #: (item, denial) of every policy denial: audited even though nothing else is written
    policy_denials: list[tuple[int, PolicyDenied]] = field(default_factory=list)

    @property
    def entry_count(self) -> int:
        return sum(len(op.entries) for op in self.operations)

    def assign(self, op_ids: Sequence[int], seqs: Sequence[int], hold_ids: Sequence[int]) -> None:
        """Give planned rows the ids the database allocated (seqs ascending, in order)."""
        start = 0
        for op, op_id in zip(self.operations, op_ids, strict=True):
            op.id = op_id
            end = start + len(op.entries)
            op.seqs = list(seqs[start:end])
            start = end
        for hold, hold_id in zip(self.new_holds, hold_ids, strict=True):
            hold.id = hold_id

    def results(self, epoch: int, now: datetime) -> list[Result | LedgerError]:
        """Every item's answer, in order (call after ``assign``)."""
        return list(self.iter_results(epoch, now))

    def iter_results(self, epoch: int, now: datetime) -> Iterator[Result | LedgerError]:
        """``results`` one item at a time (the store builds them while its rows are sent)."""
        out: list[Result | LedgerError] = []
        for outcome in self.outcomes:
            result = self._result(outcome, out, epoch, now)
            out.append(result)
            yield result

    @staticmethod
    def _result(
        outcome: object, earlier: list[Result | LedgerError], epoch: int, now: datetime
    ) -> Result | LedgerError:
        if isinstance(outcome, PlannedOperation):
            return operation_result(outcome, epoch, now)
        if isinstance(outcome, Captured):
            return operation_result(outcome.operation, epoch, now)
        if isinstance(outcome, PlannedHold):
            c = outcome.command
            return HoldResult(
                outcome.id,
                HoldStatus.PENDING,
                c.source,
                c.destination,
                c.asset,
                c.amount,
                c.amount,
                c.expires_at,
            )
        if isinstance(outcome, HoldChange):
            h = outcome.hold
            return HoldResult(
                h.id, outcome.status, h.source, h.destination, h.asset, h.amount, 0, h.expires_at
            )
        if isinstance(outcome, SameAs):
            first = earlier[outcome.item]
            return first if isinstance(first, LedgerError) else replace(first, replayed=True)
        if isinstance(outcome, OperationResult | HoldResult | LedgerError):
            return outcome
        raise TypeError(f"unexpected outcome {outcome!r}")  # pragma: no cover


def operation_result(op: PlannedOperation, epoch: int, now: datetime) -> OperationResult:
    return OperationResult(
        operation_id=op.id,
        type=op.type,
        epoch=epoch,
        entries=tuple(
            [
                PostedEntry(seq, account, asset, amount, after)
                for seq, (account, asset, amount, after) in zip(op.seqs, op.entries, strict=True)
            ]
        ),
        created_at=now,
        reverses=op.reverses,
        hold_id=op.hold_id,
    )


# ---------------------------------------------------------------------------
# Stored outcomes (idempotent replays)
# ---------------------------------------------------------------------------


def outcome_to_json(result: Result | LedgerError) -> dict[str, Any]:
    if isinstance(result, LedgerError):
        return {"error": result.to_dict()}
    if isinstance(result, OperationResult):
        return {
            "operation": {
                "id": result.operation_id,
                "type": result.type.value,
                "epoch": result.epoch,
                "created_at": result.created_at.isoformat(),
                "reverses": result.reverses,
                "hold_id": result.hold_id,
                "entries": [
                    [e.seq, e.account_id, e.asset, str(e.amount), str(e.balance_after)]
                    for e in result.entries
                ],
            }
        }
    return {
        "hold": {
            "id": result.hold_id,
            "status": result.status.value,
            "source": result.source,
            "destination": result.destination,
            "asset": result.asset,
            "amount": str(result.amount),
            "remaining": str(result.remaining),
            "expires_at": result.expires_at.isoformat(),
        }
    }


def outcome_from_json(data: dict[str, Any]) -> Result | LedgerError:
    if "error" in data:
        return error_from_dict(data["error"])
    if "operation" in data:
        op = data["operation"]
        return OperationResult(
            operation_id=op["id"],
            type=OperationType(op["type"]),
            epoch=op["epoch"],
            entries=tuple(
                PostedEntry(s, a, asset, int(amt), int(after))
                for s, a, asset, amt, after in op["entries"]
            ),
            created_at=datetime.fromisoformat(op["created_at"]),
            reverses=op["reverses"],
            hold_id=op["hold_id"],
            replayed=True,
        )
    h = data["hold"]
    return HoldResult(
        h["id"],
        HoldStatus(h["status"]),
        h["source"],
        h["destination"],
        h["asset"],
        int(h["amount"]),
        int(h["remaining"]),
        datetime.fromisoformat(h["expires_at"]),
        replayed=True,
    )


# ---------------------------------------------------------------------------
# What a batch touches (so the repository can lock it first)
# ---------------------------------------------------------------------------


def referenced_holds(commands: Sequence[Command]) -> set[int]:
    return {c.hold_id for c in commands if isinstance(c, CaptureHold | VoidHold)}


def referenced_operations(commands: Sequence[Command]) -> set[int]:
    return {c.operation_id for c in commands if isinstance(c, ReverseOperation)}


def touched_accounts(
    commands: Sequence[Command], holds: dict[int, HoldRow], originals: dict[int, OriginalOperation]
) -> set[int]:
    ids: set[int] = set()
    for c in commands:
        if isinstance(c, PostOperation):
            for e in c.entries:
                ids.add(e.account_id)
        elif isinstance(c, CreateHold):
            ids.update((c.source, c.destination))
        elif isinstance(c, CaptureHold | VoidHold) and c.hold_id in holds:
            ids.update((holds[c.hold_id].source, holds[c.hold_id].destination))
            if isinstance(c, CaptureHold) and c.destination is not None:
                ids.add(c.destination)
        elif isinstance(c, ReverseOperation) and c.operation_id in originals:
            ids.update(a for a, _, _ in originals[c.operation_id].entries)
    return ids


# ---------------------------------------------------------------------------
# The planner
# ---------------------------------------------------------------------------


_DEBIT = Side.DEBIT
_Mark = tuple[int, int, int, int, int, dict[int, HoldRow], set[int], int]


class _Planner:
    def __init__(
        self,
        book: BalanceBook,
        holds: dict[int, HoldRow],
        originals: dict[int, OriginalOperation],
        now: datetime,
        policy: PolicyContext | None = None,
    ) -> None:
        self.policy = policy
        self.book = book
        self.holds = dict(holds)
        self.originals = originals
        self.now = now
        self.plan = Plan()
        self.reversed_in_batch: set[int] = set()

    def _post(
        self,
        *,
        item: int,
        type_: OperationType,
        entries: Sequence[EntrySpec],
        actor: Actor,
        key: str | None,
        metadata: dict[str, Any],
        reason: str | None,
        saga_id: UUID | None = None,
        reverses: int | None = None,
        hold_id: int | None = None,
    ) -> PlannedOperation:
        applied = self._check_policy(item, type_, entries)
        if applied is not None and self.policy is not None:
            entries = (*entries, *applied.fee_legs)
            balances_after = self._apply_allowing(entries, applied.frozen_receivers)
            self.policy.commit(applied)
        else:
            balances_after = self.book.apply(entries)
        op = PlannedOperation(
            item=item,
            type=type_,
            actor=actor,
            idempotency_key=key,
            metadata=metadata,
            reason=reason,
            saga_id=saga_id,
            reverses=reverses,
            hold_id=hold_id,
            entries=[
                (e.account_id, e.asset, e.signed, after)
                for e, after in zip(entries, balances_after, strict=True)
            ],
            policy=applied,
        )
        self.plan.operations.append(op)
        return op

    # -- policy hook: evaluated before the book applies the entries --------------------------------
    def _check_policy(
        self, item: int, type_: OperationType, entries: Sequence[EntrySpec]
    ) -> Applied | None:
        if self.policy is None:
            return None
        try:
            return self.policy.evaluate(type_, entries, lambda a: self.book.get(a).status)
        except PolicyDenied as denial:
            self.plan.policy_denials.append((item, denial))
            raise

    def _apply_allowing(self, entries: Sequence[EntrySpec], frozen: frozenset[int]) -> list[int]:
        """``book.apply``, letting the frozen accounts a policy allows to receive be credited."""
        saved = [(self.book.get(a), self.book.get(a).status) for a in frozen]
        for account, _ in saved:
            account.status = AccountStatus.ACTIVE
        try:
            return self.book.apply(entries)
        finally:
            for account, status in saved:
                account.status = status

    def run(self, item: int, command: Command) -> object:
        """Apply one command to the book and the plan, or raise its ``LedgerError``."""
        if isinstance(command, PostOperation):
            return self._post_operation(item, command)
        if isinstance(command, CreateHold):
            return self._create_hold(item, command)
        if isinstance(command, CaptureHold):
            return self._capture(item, command)
        if isinstance(command, VoidHold):
            return self._void(item, command)
        return self._reverse(item, command)

    def _post_operation(self, item: int, command: PostOperation) -> PlannedOperation:
        if command.type in REASON_REQUIRED and not (command.reason or "").strip():
            raise ReasonRequired(f"a {command.type.value} needs a reason", field="reason")
        if len(command.entries) == 2 and self.policy is None:
            # the fast path knows nothing of policies: a batch with any policy in force
            # takes the general path, which evaluates them
            fast = self._post_pair(item, command)
            if fast is not None:
                return fast
        validate_entries(command.entries)
        return self._post(
            item=item,
            type_=command.type,
            entries=command.entries,
            actor=command.actor,
            key=command.idempotency_key,
            metadata=command.metadata,
            reason=command.reason,
            saga_id=command.saga_id,
        )

    def _post_pair(self, item: int, command: PostOperation) -> PlannedOperation | None:
        """The hot path: a valid two-leg transfer, checked and applied in one step. Returns
        ``None`` (nothing changed) for anything else, so the general path decides it and
        raises exactly the error it always raised."""
        first, second = command.entries
        amount = first.amount
        if (
            second.amount != amount
            or first.side is second.side
            or first.asset != second.asset
            or first.account_id == second.account_id
            or not 0 < amount <= INT64_MAX
        ):
            return None
        debit, credit = (first, second) if first.side is _DEBIT else (second, first)
        afters = self.book.move(debit.account_id, credit.account_id, first.asset, amount)
        if afters is None:
            return None
        a, b = (afters, (-amount, amount)) if debit is first else (afters[::-1], (amount, -amount))
        op = PlannedOperation(
            item,
            command.type,
            command.actor,
            command.idempotency_key,
            command.metadata,
            command.reason,
            command.saga_id,
            None,
            None,
            [
                (first.account_id, first.asset, b[0], a[0]),
                (second.account_id, second.asset, b[1], a[1]),
            ],
        )
        self.plan.operations.append(op)
        return op

    def _create_hold(self, item: int, command: CreateHold) -> PlannedHold:
        check_int64(command.amount, "amount")
        if command.amount <= 0:
            raise InvalidAmount("a hold amount must be positive", field="amount")
        if command.expires_at <= self.now:
            raise ValidationError("expires_at must be in the future", field="expires_at")
        self.book.usable(command.destination, command.asset)
        # the capture's policy, checked for the whole amount before anything is reserved
        # (claims, counterparties, amount bounds, limits); nothing is consumed here: limit
        # usage and fees apply when the hold is captured, where the policy is checked again
        self._check_policy(
            item,
            OperationType.HOLD_CAPTURE,
            transfer_legs(command.source, command.destination, command.asset, command.amount),
        )
        self.book.reserve(command.source, command.asset, command.amount)
        planned = PlannedHold(item, command)
        self.plan.new_holds.append(planned)
        return planned

    def _capture(self, item: int, command: CaptureHold) -> Captured:
        hold = self._pending_hold(command.hold_id)
        if hold.expires_at <= self.now:
            raise HoldNotPending(
                f"hold {hold.id} expired at {hold.expires_at.isoformat()}",
                hold_id=hold.id,
                status=HoldStatus.EXPIRED.value,
            )
        amount = hold.remaining if command.amount is None else command.amount
        check_int64(amount, "amount")
        if amount <= 0:
            raise InvalidAmount("a capture amount must be positive", field="amount")
        if amount > hold.remaining:
            raise HoldExceeded(
                f"hold {hold.id} has {hold.remaining} left, asked {amount}", hold_id=hold.id
            )
        # the whole reservation ends (only ``amount`` moves, the rest becomes available),
        # unless the capture keeps the rest reserved
        remaining = hold.remaining - amount if command.keep_rest else 0
        destination = hold.destination if command.destination is None else command.destination
        if destination == hold.source:
            raise ValidationError("a capture cannot pay the hold's own source", field="hold_id")
        self.book.release(hold.source, hold.remaining - remaining)
        op = self._post(
            item=item,
            type_=OperationType.HOLD_CAPTURE,
            entries=transfer_legs(hold.source, destination, hold.asset, amount),
            actor=command.actor,
            key=command.idempotency_key,
            metadata=command.metadata,
            reason=None,
            hold_id=hold.id,
        )
        status = HoldStatus.PENDING if remaining > 0 else HoldStatus.POSTED
        change = HoldChange(item, hold, status, amount, remaining)
        self.holds[hold.id] = replace(hold, remaining=remaining, status=status)
        self.plan.hold_changes.append(change)
        return Captured(change, op)

    def _void(self, item: int, command: VoidHold) -> HoldChange:
        hold = self._pending_hold(command.hold_id)
        status = HoldStatus.EXPIRED if command.expire else HoldStatus.VOIDED
        self.book.release(hold.source, hold.remaining)
        change = HoldChange(item, hold, status, 0)
        self._close(hold, status)
        self.plan.hold_changes.append(change)
        return change

    def _reverse(self, item: int, command: ReverseOperation) -> PlannedOperation:
        if not command.reason.strip():
            raise ReasonRequired("a reversal needs a reason", field="reason")
        original = self.originals.get(command.operation_id)
        if original is None:
            raise UnknownOperation(
                f"operation {command.operation_id} does not exist",
                operation_id=command.operation_id,
            )
        if original.type is OperationType.REVERSAL:
            raise NotReversible(
                "a reversal cannot itself be reversed; post an adjustment", operation_id=original.id
            )
        if original.reversed_by is not None or original.id in self.reversed_in_batch:
            raise AlreadyReversed(
                f"operation {original.id} is already reversed",
                operation_id=original.id,
                reversed_by=original.reversed_by,
            )
        legs = tuple(
            EntrySpec(account, asset, abs(amount), Side.DEBIT if amount > 0 else Side.CREDIT)
            for account, asset, amount in original.entries
        )
        op = self._post(
            item=item,
            type_=OperationType.REVERSAL,
            entries=legs,
            actor=command.actor,
            key=command.idempotency_key,
            metadata={"reverses": original.id},
            reason=command.reason,
            reverses=original.id,
        )
        self.reversed_in_batch.add(original.id)
        return op

    def _pending_hold(self, hold_id: int) -> HoldRow:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise UnknownHold(f"hold {hold_id} does not exist", hold_id=hold_id)
        if hold.status is not HoldStatus.PENDING:
            raise HoldNotPending(
                f"hold {hold_id} is {hold.status.value}", hold_id=hold_id, status=hold.status.value
            )
        return hold

    def _close(self, hold: HoldRow, status: HoldStatus) -> None:
        # later commands in the same batch see the hold as no longer pending
        self.holds[hold.id] = replace(hold, remaining=0, status=status)

    # -- undo for linked groups --------------------------------------------------------------------
    def mark(self) -> _Mark:
        p = self.plan
        return (
            self.book.checkpoint(),
            len(p.operations),
            len(p.new_holds),
            len(p.hold_changes),
            len(p.failed_saga_operations),
            dict(self.holds),
            set(self.reversed_in_batch),
            self.policy.limits.checkpoint() if self.policy is not None else 0,
        )

    def undo(self, mark: _Mark) -> None:
        book_mark, ops, new_holds, changes, failed, holds, reversed_, limits = mark
        self.book.rollback(book_mark)
        if self.policy is not None:
            self.policy.limits.rollback(limits)
        del self.plan.operations[ops:]
        del self.plan.new_holds[new_holds:]
        del self.plan.hold_changes[changes:]
        del self.plan.failed_saga_operations[failed:]
        self.holds, self.reversed_in_batch = holds, reversed_


def plan_batch(
    commands: Sequence[Command],
    *,
    groups: Sequence[int | None],
    book: BalanceBook,
    holds: dict[int, HoldRow],
    originals: dict[int, OriginalOperation],
    stored: dict[str, StoredOutcome],
    now: datetime,
    policy: PolicyContext | None = None,
) -> Plan:
    """Decide every command of a batch. ``groups[i]`` links commands all-or-nothing.

    Commands of one group must be adjacent. Idempotency: a key seen before (stored, or
    earlier in this batch) with the same request hash replays that outcome; with a
    different hash it is an ``IdempotencyConflict``. Failures are stored under their key.
    ``policy``: active policies with their locked context; a denial is a
    ``PolicyDenied`` outcome, remembered under its key, and listed in ``policy_denials``.
    """
    planner = _Planner(book, holds, originals, now, policy)
    plan = planner.plan
    seen: dict[str, tuple[bytes, int]] = {}
    index = 0
    while index < len(commands):
        group = groups[index]
        end = index + 1
        while group is not None and end < len(commands) and groups[end] == group:
            end += 1
        mark = planner.mark() if group is not None else None
        for item in range(index, end):
            outcome = _run_one(planner, item, commands[item], stored, seen)
            plan.outcomes.append(outcome)
            if isinstance(outcome, LedgerError) and mark is not None:
                _fail_group(
                    planner,
                    mark=mark,
                    commands=commands,
                    start=index,
                    end=end,
                    failed_at=item,
                    cause=outcome,
                    stored=stored,
                    seen=seen,
                )
                break
        index = end
    return plan


def _fail_group(
    planner: _Planner,
    *,
    mark: _Mark,
    commands: Sequence[Command],
    start: int,
    end: int,
    failed_at: int,
    cause: LedgerError,
    stored: dict[str, StoredOutcome],
    seen: dict[str, tuple[bytes, int]],
) -> None:
    """Undo a linked group: nothing of it is applied; every member answers an error."""
    planner.undo(mark)
    plan = planner.plan
    del plan.outcomes[start:]
    for item in range(start, end):
        if item == failed_at:
            plan.outcomes.append(cause)
            command = commands[item]
            if (
                isinstance(command, PostOperation)
                and command.saga_id is not None
                and not isinstance(cause, ValidationError)
            ):
                plan.failed_saga_operations.append(FailedSagaOperation(command, cause))
        else:
            plan.outcomes.append(
                LinkedOperationFailed(
                    f"not applied: linked command {failed_at} failed ({cause.code})",
                    failed_item=failed_at,
                    cause=cause.code,
                )
            )
        if not isinstance(cause, ValidationError):
            _remember_key(plan, seen, stored, commands[item], item)


def _run_one(
    planner: _Planner,
    item: int,
    command: Command,
    stored: dict[str, StoredOutcome],
    seen: dict[str, tuple[bytes, int]],
) -> object:
    key = command.idempotency_key
    if key is not None:
        digest = command.request_hash()
        earlier = seen.get(key)
        if earlier is not None:
            if earlier[0] != digest:
                return IdempotencyConflict(
                    "this idempotency key was used with a different request", key=key
                )
            return SameAs(earlier[1])
        if key in stored:
            if stored[key].request_hash != digest:
                return IdempotencyConflict(
                    "this idempotency key was used with a different request", key=key
                )
            return outcome_from_json(stored[key].outcome)
    # a failing command appends nothing to the plan (every path appends last), so undoing
    # its balance changes is enough
    checkpoint = planner.book.checkpoint()
    try:
        outcome = planner.run(item, command)
    except LedgerError as err:
        planner.book.rollback(checkpoint)
        if isinstance(err, ValidationError):
            # a malformed request never started executing: like Stripe, neither its key
            # nor its saga remembers it, so the corrected request can be sent again
            return err
        if isinstance(command, PostOperation) and command.saga_id is not None:
            planner.plan.failed_saga_operations.append(FailedSagaOperation(command, err))
        outcome = err
    _remember_key(planner.plan, seen, stored, command, item)
    return outcome


def _remember_key(
    plan: Plan,
    seen: dict[str, tuple[bytes, int]],
    stored: dict[str, StoredOutcome],
    command: Command,
    item: int,
) -> None:
    key = command.idempotency_key
    if key is not None and key not in seen and key not in stored:
        seen[key] = (command.request_hash(), item)
        plan.keyed_items.append(item)
