"""Invariants under concurrency and crashes, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from core.errors import (
    AmountOverflow,
    AssetMismatch,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
    UnbalancedOperation,
)
from core.ledger import Ledger
from core.types import (
    SYSTEM_ACTOR,
    AccountKind,
    AccountStatus,
    CaptureHold,
    Command,
    CreateHold,
    EntrySpec,
    HoldResult,
    HoldStatus,
    OperationResult,
    OperationType,
    PostOperation,
    Result,
    ReverseOperation,
    Side,
    VoidHold,
    transfer_legs,
)
from tests.conftest import ADMIN, World, make_world, settings_for
from tests.support import create_database, drop_database, raw_connect, terminate_when_blocked

T = TypeVar("T")

pytestmark = pytest.mark.integration


async def entries_total(world: World) -> int:
    async with world.ledger.engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE asset = :a"),
                {"a": world.asset},
            )
        ).scalar_one()
    return int(value)


async def test_entries_are_append_only_in_the_database(world: World, database_url: str) -> None:
    alice = await world.funded(100)
    conn = await raw_connect(database_url)
    try:
        for statement in (
            "UPDATE ledger_entries SET amount = amount + 1 WHERE account_id = $1",
            "DELETE FROM ledger_entries WHERE account_id = $1",
            "UPDATE operations SET type = 'X' WHERE id IN "
            "(SELECT operation_id FROM ledger_entries WHERE account_id = $1)",
            "DELETE FROM audit_log WHERE entity_id = $1::bigint::text",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(statement, alice)
        for table in ("ledger_entries", "operations", "audit_log"):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(f"TRUNCATE {table} CASCADE")
    finally:
        await conn.close()
    assert (await world.ledger.queries.balance(alice)).posted == 100


async def test_database_refuses_a_floor_break_even_from_raw_sql(
    world: World, database_url: str
) -> None:
    alice = await world.funded(100)
    conn = await raw_connect(database_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE balances SET posted = -1 WHERE account_id = $1", alice)
    finally:
        await conn.close()


async def test_concurrent_transfers_conserve_value(world: World, database_url: str) -> None:
    """Thousands of random transfers from many tasks on two independent ledger instances
    (two pools, two batchers: as two processes would) over a few accounts; each transfer
    is retried under its idempotency key. Afterwards: value conserved exactly, floors
    hold, reconciler clean, and every key produced exactly one operation."""
    accounts = [await world.funded(500) for _ in range(6)]
    second = Ledger.connect(settings_for(database_url, pool_size=4))
    rng = random.Random(42)
    plan = [
        (rng.sample(accounts, 2), rng.randint(1, 120), f"{world.asset}-{i}") for i in range(3000)
    ]
    applied: dict[str, int] = {}

    async def worker(ledger: Ledger, jobs: list) -> None:
        for (src, dst), amount, key in jobs:
            for _ in range(2):  # the retry a client sends after a timeout
                result = await ledger.submit(
                    PostOperation(
                        OperationType.TRANSFER,
                        transfer_legs(src, dst, world.asset, amount),
                        idempotency_key=key,
                    )
                )
                if isinstance(result, OperationResult):
                    assert applied.setdefault(key, result.operation_id) == result.operation_id
                else:
                    assert isinstance(result, InsufficientFunds), result

    try:
        chunks = [plan[i::40] for i in range(40)]
        await asyncio.gather(
            *(worker(world.ledger if i % 2 else second, chunk) for i, chunk in enumerate(chunks))
        )
    finally:
        await second.close()
    assert await world.total() == 0
    assert await entries_total(world) == 0
    for account in accounts:
        balance = await world.ledger.queries.balance(account)
        assert balance.posted >= 0
    assert await world.ledger.reconcile() == []
    async with world.ledger.engine.connect() as conn:
        keyed = (
            await conn.execute(
                text(
                    "SELECT idempotency_key, count(*) FROM operations WHERE idempotency_key LIKE :p "
                    "GROUP BY 1 HAVING count(*) > 1"
                ),
                {"p": f"{world.asset}-%"},
            )
        ).all()
        ops = (
            await conn.execute(
                text("SELECT count(*) FROM operations WHERE idempotency_key LIKE :p"),
                {"p": f"{world.asset}-%"},
            )
        ).scalar()
    assert keyed == []
    assert ops == len(applied) > 0


async def test_hot_issuance_account_under_concurrent_mints(world: World) -> None:
    users = [(await world.user_wallet())[AccountKind.AVAILABLE] for _ in range(20)]

    async def mint(i: int) -> None:
        await world.ledger.transfer(
            source=world.issuance,
            destination=users[i % 20],
            asset=world.asset,
            amount=3,
            type_=OperationType.MINT,
        )

    await asyncio.gather(*(mint(i) for i in range(1000)))
    assert (await world.ledger.queries.balance(world.issuance)).posted == -3000
    history = await world.ledger.queries.history(world.issuance, limit=500)
    # balance_after on the hot account is a gap-free running balance in seq order
    afters = [e.balance_after for e in reversed(history.entries)]
    assert afters == list(range(afters[0], afters[0] - 3 * len(afters), -3))
    assert await world.ledger.reconcile() == []


async def test_killed_transaction_mid_batch_leaves_nothing(world: World, database_url: str) -> None:
    """Block a batch in the middle of its writes (its idempotency insert waits on a key
    another transaction holds), kill its backend, and check nothing of it persisted."""
    alice = await world.funded(1_000)
    bob = (await world.user_wallet())[AccountKind.AVAILABLE]
    blocker = await raw_connect(database_url)
    tx = blocker.transaction()
    await tx.start()
    key = f"crash-{world.asset}"
    await blocker.execute(
        "INSERT INTO idempotency_keys (key, request_hash, outcome) VALUES ($1, '\\x00', '{}')", key
    )
    batch = [
        PostOperation(OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5))
        for _ in range(50)
    ]
    batch.append(
        PostOperation(
            OperationType.TRANSFER, transfer_legs(alice, bob, world.asset, 5), idempotency_key=key
        )
    )
    task = asyncio.create_task(world.ledger.post_many(batch))
    try:
        # it already inserted its entries (uncommitted) when it blocked
        await terminate_when_blocked(database_url, task, "%idempotency_keys%")
        results = await task
    finally:
        await tx.rollback()
        await blocker.close()
    assert all(isinstance(r, LedgerError) and r.code == "STORAGE_ERROR" for r in results)
    assert (await world.ledger.queries.balance(alice)).posted == 1_000
    assert (await world.ledger.queries.balance(bob)).posted == 0
    assert await world.ledger.reconcile() == []


async def test_reconciler_reports_every_drift() -> None:
    url = await create_database()
    ledger = Ledger.connect(settings_for(url))
    try:
        world = await make_world(ledger, scale=0)
        alice = await world.funded(100)
        bob = await world.funded(50)
        assert await ledger.reconcile() == []
        conn = await raw_connect(url)
        try:
            await conn.execute("UPDATE balances SET posted = 90 WHERE account_id = $1", alice)
            await conn.execute("UPDATE balances SET pending = 7 WHERE account_id = $1", bob)
        finally:
            await conn.close()
        drifts = {(d.id, d.field, d.expected, d.found) for d in await ledger.reconcile()}
        assert (alice, "posted", 100, 90) in drifts
        assert (alice, "balance_after", 100, 90) in drifts
        assert (bob, "pending", 0, 7) in drifts
    finally:
        await ledger.close()
        await drop_database(url)


# -- the stateful property test -------------------------------------------------------------
#
# Hypothesis drives random commands, valid and invalid, through the real ledger (its own
# database, a dedicated event loop: the machine's rules are synchronous and run each
# command to completion on that loop). A model predicts every outcome: the new balances
# of a success, the exact error code (and the account it names) of a refusal. After every
# step the database must equal the model, conserve value per asset and reconcile.

INT64_MAX = 2**63 - 1
NO_SUCH_ID = 10**12
USERS = 3  # user AVAILABLE accounts per asset; index USERS picks the asset's issuance
PICK = st.integers(0, USERS)
HOLD_CHOICE = st.sampled_from(["pending"] * 6 + ["any"] * 3 + ["unknown"])
Outcome = tuple[str, int | None] | None  # None: success; else (error code, account or None)


@dataclass
class ModelAccount:
    id: int
    asset: str
    floor: int | None
    posted: int = 0
    pending: int = 0
    frozen: bool = False


@dataclass
class ModelHold:
    id: int
    source: int
    destination: int
    asset: str
    remaining: int
    status: HoldStatus = HoldStatus.PENDING


@dataclass
class ModelOperation:
    id: int
    type: OperationType
    entries: list[tuple[int, str, int]]  # (account, asset, signed amount) in entry order
    reversed: bool = False


@dataclass
class Keyed:
    command: PostOperation
    outcome: OperationResult | str  # the operation, or the code of the remembered refusal


class LedgerModel:
    """What the ledger should hold, and what it should answer to each command."""

    def __init__(self) -> None:
        self.accounts: dict[int, ModelAccount] = {}
        self.holds: dict[int, ModelHold] = {}
        self.operations: dict[int, ModelOperation] = {}

    @staticmethod
    def shape(entries: Sequence[EntrySpec]) -> Outcome:
        """core.posting.validate_entries: count, two accounts, amounts, balance per asset."""
        if len(entries) < 2 or len({e.account_id for e in entries}) < 2:
            return ("UNBALANCED_OPERATION", None)
        for e in entries:
            if e.amount > INT64_MAX:
                return ("AMOUNT_OVERFLOW", None)
            if e.amount <= 0:
                return ("INVALID_AMOUNT", None)
        totals: dict[str, int] = {}
        for e in entries:
            totals[e.asset] = totals.get(e.asset, 0) + e.signed
        if any(totals.values()):
            return ("UNBALANCED_OPERATION", None)
        return None

    def usable(self, account_id: int, asset: str) -> Outcome:
        account = self.accounts.get(account_id)
        if account is None:
            return ("UNKNOWN_ACCOUNT", account_id)
        if account.asset != asset:
            return ("ASSET_MISMATCH", account_id)
        if account.frozen:
            return ("ACCOUNT_FROZEN", account_id)
        return None

    def refusal(self, legs: Sequence[tuple[int, str, int]]) -> Outcome:
        """core.posting.BalanceBook.apply: every leg's account usable, then each debited
        account's available balance stays at or above its floor (in first-leg order)."""
        for account_id, asset, _ in legs:
            refused = self.usable(account_id, asset)
            if refused:
                return refused
        net: dict[int, int] = {}
        for account_id, _, signed in legs:
            net[account_id] = net.get(account_id, 0) + signed
        for account_id, delta in net.items():
            a = self.accounts[account_id]
            if delta < 0 and a.floor is not None and a.posted + delta - a.pending < a.floor:
                return ("INSUFFICIENT_FUNDS", account_id)
        return None

    def apply(self, legs: Sequence[tuple[int, str, int]]) -> None:
        for account_id, _, signed in legs:
            self.accounts[account_id].posted += signed

    def post(self, entries: Sequence[EntrySpec]) -> Outcome:
        """Predict a PostOperation; on success apply it to the model."""
        legs = [(e.account_id, e.asset, e.signed) for e in entries]
        refused = self.shape(entries) or self.refusal(legs)
        if refused is None:
            self.apply(legs)
        return refused

    def record(self, result: OperationResult, type_: OperationType) -> None:
        self.operations[result.operation_id] = ModelOperation(
            result.operation_id,
            type_,
            [(e.account_id, e.asset, e.amount) for e in result.entries],
        )


class LedgerMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    ledger: Ledger

    def __init__(self) -> None:
        super().__init__()
        self.model = LedgerModel()
        self.keys: dict[str, Keyed] = {}
        self.assets: list[str] = []
        self.by_asset: list[list[int]] = []  # per asset: USERS user accounts, then issuance
        self.run(self._setup())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> None:
        for _ in range(2):
            world = await make_world(self.ledger, scale=0)
            self.assets.append(world.asset)
            self.model.accounts[world.issuance] = ModelAccount(world.issuance, world.asset, None)
            users = [(await world.user_wallet())[AccountKind.AVAILABLE] for _ in range(USERS)]
            for account_id in users:
                self.model.accounts[account_id] = ModelAccount(account_id, world.asset, 0)
            self.by_asset.append([*users, world.issuance])
        for asset, accounts in zip(self.assets, self.by_asset, strict=True):
            for i, account_id in enumerate(accounts[:USERS]):
                await self._post(
                    OperationType.MINT,
                    transfer_legs(accounts[USERS], account_id, asset, 300 * (i + 1)),
                )
            # every run starts with pending holds, so available < posted from the first step
            for i, account_id in enumerate(accounts[1:USERS], start=1):
                hold = await self.ledger.hold(
                    source=account_id, destination=accounts[0], asset=asset, amount=100 * i
                )
                self.model.accounts[account_id].pending += 100 * i
                self.model.holds[hold.hold_id] = ModelHold(
                    hold.hold_id, account_id, accounts[0], asset, 100 * i
                )

    # -- submitting and comparing ------------------------------------------------------------
    def submit(self, command: Command) -> Result | LedgerError:
        outcome = self.run(self.ledger.submit(command))
        assert isinstance(outcome, Result | LedgerError), outcome
        return outcome

    @staticmethod
    def expect(outcome: Result | LedgerError, predicted: Outcome) -> None:
        """The ledger answered what the model predicted (any other error fails the test)."""
        event(outcome.code if isinstance(outcome, LedgerError) else type(outcome).__name__)
        if predicted is None:
            assert not isinstance(outcome, LedgerError), f"refused: {outcome.code} {outcome}"
            return
        code, account_id = predicted
        assert isinstance(outcome, LedgerError), f"accepted, expected {code}: {outcome}"
        assert outcome.code == code, f"expected {code}, got {outcome.code}: {outcome}"
        if account_id is not None:
            assert outcome.details.get("account_id") == account_id, outcome.details

    async def _post(self, type_: OperationType, entries: Sequence[EntrySpec]) -> None:
        """Setup postings (all must succeed)."""
        predicted = self.model.post(entries)
        assert predicted is None
        result = await self.ledger.post(PostOperation(type_, tuple(entries)))
        self.model.record(result, type_)

    def post(self, entries: Sequence[EntrySpec], key: str | None = None) -> None:
        command = PostOperation(OperationType.TRANSFER, tuple(entries), idempotency_key=key)
        predicted = self.model.post(entries)
        outcome = self.submit(command)
        self.expect(outcome, predicted)
        if isinstance(outcome, OperationResult):
            assert not outcome.replayed
            self.model.record(outcome, OperationType.TRANSFER)
            assert [(e.account_id, e.amount) for e in outcome.entries] == [
                (e.account_id, e.signed) for e in entries
            ]
        if key is not None:
            stored = outcome if isinstance(outcome, OperationResult) else outcome.code
            self.keys[key] = Keyed(command, stored)

    def account(self, asset: int, index: int) -> int:
        return self.by_asset[asset][index]

    # -- valid-shaped postings (may still be refused: frozen, insufficient funds) ------------
    @rule(asset=st.integers(0, 1), src=PICK, dst=PICK, amount=st.integers(1, 700),
          keyed=st.booleans())  # fmt: skip
    def transfer(self, asset: int, src: int, dst: int, amount: int, keyed: bool) -> None:
        code = self.assets[asset]
        legs = transfer_legs(self.account(asset, src), self.account(asset, dst), code, amount)
        self.post(legs, key=f"sm-{uuid.uuid4().hex}" if keyed else None)

    @rule(
        asset=st.integers(0, 1),
        debits=st.lists(st.tuples(PICK, st.integers(1, 300)), min_size=1, max_size=3),
        credits=st.lists(PICK, min_size=1, max_size=3),
        other_asset=st.booleans(),
        skew=st.sampled_from([0, 0, 0, 1, -1]),
    )
    def multi_leg(
        self,
        asset: int,
        debits: list[tuple[int, int]],
        credits: list[int],
        other_asset: bool,
        skew: int,
    ) -> None:
        """Several legs, optionally in both assets; ``skew`` != 0 unbalances the first asset
        (debits and credits differ by one unit): UNBALANCED_OPERATION."""
        entries: list[EntrySpec] = []
        for a in (asset, 1 - asset) if other_asset else (asset,):
            code = self.assets[a]
            total = sum(amount for _, amount in debits)
            entries += [
                EntrySpec(self.account(a, i), code, amount, Side.DEBIT) for i, amount in debits
            ]
            # split the total over the credits, every credit at least 1
            shares = [total // len(credits)] * len(credits)
            shares[0] += total - sum(shares)
            if a == asset:
                shares[0] += skew
            entries += [
                EntrySpec(self.account(a, i), code, share, Side.CREDIT)
                for i, share in zip(credits, shares, strict=True)
            ]
        if any(e.amount <= 0 for e in entries):  # a zero share: keep this rule well formed
            return
        self.post(entries)

    # -- malformed or impossible postings: refused with an exact code, nothing written --------
    @rule(
        asset=st.integers(0, 1),
        src=PICK,
        dst=PICK,
        defect=st.sampled_from(
            ["zero", "negative", "overflow", "unknown_source", "unknown_destination",
             "wrong_asset", "cross_asset", "single_leg", "no_legs"]
        ),
        keyed=st.booleans(),
    )  # fmt: skip
    def malformed(self, asset: int, src: int, dst: int, defect: str, keyed: bool) -> None:
        code = self.assets[asset]
        source, destination = self.account(asset, src), self.account(asset, dst)
        entries: tuple[EntrySpec, ...]
        if defect == "zero":
            entries = transfer_legs(source, destination, code, 0)
        elif defect == "negative":
            entries = transfer_legs(source, destination, code, -5)
        elif defect == "overflow":
            entries = transfer_legs(source, destination, code, INT64_MAX + 1)
        elif defect == "unknown_source":
            entries = transfer_legs(NO_SUCH_ID, destination, code, 1)
        elif defect == "unknown_destination":
            entries = transfer_legs(source, NO_SUCH_ID, code, 1)
        elif defect == "wrong_asset":  # both accounts hold the other asset
            entries = transfer_legs(source, destination, self.assets[1 - asset], 1)
        elif defect == "cross_asset":  # the credited account holds the other asset
            other = self.account(1 - asset, dst)
            entries = transfer_legs(source, other, code, 1)
        elif defect == "single_leg":
            entries = transfer_legs(source, destination, code, 1)[:1]
        else:
            entries = ()
        operations = len(self.model.operations)
        self.post(entries, key=f"sm-{uuid.uuid4().hex}" if keyed else None)
        assert len(self.model.operations) == operations  # every defect is refused

    # -- holds ---------------------------------------------------------------------------------
    @rule(asset=st.integers(0, 1), src=PICK, dst=PICK,
          amount=st.integers(1, 500) | st.sampled_from([0, -1, 5_000, INT64_MAX + 1]))  # fmt: skip
    def hold(self, asset: int, src: int, dst: int, amount: int) -> None:
        code = self.assets[asset]
        source, destination = self.account(asset, src), self.account(asset, dst)
        m = self.model
        predicted: Outcome = None
        if amount > INT64_MAX:
            predicted = ("AMOUNT_OVERFLOW", None)
        elif amount <= 0:
            predicted = ("INVALID_AMOUNT", None)
        else:
            predicted = m.usable(destination, code) or m.usable(source, code)
            a = m.accounts[source]
            if (
                predicted is None
                and a.floor is not None
                and a.posted - a.pending - amount < a.floor
            ):
                predicted = ("INSUFFICIENT_FUNDS", source)
        outcome = self.submit(CreateHold(source, destination, code, amount, self.deadline()))
        self.expect(outcome, predicted)
        if isinstance(outcome, HoldResult):
            assert (outcome.status, outcome.remaining) == (HoldStatus.PENDING, amount)
            m.accounts[source].pending += amount
            m.holds[outcome.hold_id] = ModelHold(outcome.hold_id, source, destination, code, amount)

    @precondition(lambda self: self.held_bounded())
    @rule(pick=st.integers(0, 50), dst=PICK, extra=st.integers(0, 10**6), as_hold=st.booleans())
    def beyond_available(self, pick: int, dst: int, extra: int, as_hold: bool) -> None:
        """Spend from an account with pending holds an amount that its posted balance
        covers but its available balance (posted - pending) does not: INSUFFICIENT_FUNDS
        naming the account, decided by the ledger (not the database CHECK)."""
        held = self.held_bounded()
        a = self.model.accounts[held[pick % len(held)]]
        assert a.floor is not None
        asset = self.assets.index(a.asset)
        amount = max(1, a.posted - a.pending - a.floor + 1 + extra % a.pending)
        destination = self.account(asset, dst)
        if not as_hold:
            self.post(transfer_legs(a.id, destination, a.asset, amount))
            return
        predicted = self.model.usable(destination, a.asset) or self.model.usable(a.id, a.asset)
        outcome = self.submit(CreateHold(a.id, destination, a.asset, amount, self.deadline()))
        self.expect(outcome, predicted or ("INSUFFICIENT_FUNDS", a.id))

    def held_bounded(self) -> list[int]:
        """Accounts with a floor and pending holds."""
        m = self.model.accounts.values()
        return sorted(a.id for a in m if a.pending > 0 and a.floor is not None)

    def deadline(self) -> datetime:
        return self.run(db_now(self.ledger)) + timedelta(minutes=15)

    def pick_hold(self, pick: int, which: str) -> int:
        """A pending hold (mostly), any hold (perhaps closed), or one that does not exist."""
        holds = self.model.holds.values()
        pending = [h.id for h in holds if h.status is HoldStatus.PENDING]
        ids = pending if which == "pending" and pending else sorted(self.model.holds)
        return NO_SUCH_ID if which == "unknown" or not ids else ids[pick % len(ids)]

    @precondition(lambda self: self.model.holds)
    @rule(pick=st.integers(0, 50), which=HOLD_CHOICE,
          amount=st.none() | st.integers(0, 300) | st.just(10**6))  # fmt: skip
    def capture(self, pick: int, which: str, amount: int | None) -> None:
        hold_id = self.pick_hold(pick, which)
        m = self.model
        h = m.holds.get(hold_id)
        predicted: Outcome = None
        moved = 0
        if h is None:
            predicted = ("UNKNOWN_HOLD", None)
        elif h.status is not HoldStatus.PENDING:
            predicted = ("HOLD_NOT_PENDING", None)
        else:
            moved = h.remaining if amount is None else amount
            if moved <= 0:
                predicted = ("INVALID_AMOUNT", None)
            elif moved > h.remaining:
                predicted = ("HOLD_AMOUNT_EXCEEDED", None)
            elif h.destination == h.source:
                # a hold reserving funds on its own source (an offline allowance's) is moved
                # by captures naming another payee only
                predicted = ("VALIDATION_ERROR", None)
            else:
                # the whole reservation ends, then ``moved`` is posted source -> destination
                m.accounts[h.source].pending -= h.remaining
                legs = [(h.source, h.asset, -moved), (h.destination, h.asset, moved)]
                predicted = m.refusal(legs)
                if predicted is None:
                    m.apply(legs)
                    h.remaining, h.status = 0, HoldStatus.POSTED
                else:
                    m.accounts[h.source].pending += h.remaining
        outcome = self.submit(CaptureHold(hold_id, amount))
        self.expect(outcome, predicted)
        if isinstance(outcome, OperationResult):
            assert [e.amount for e in outcome.entries] == [-moved, moved]
            m.record(outcome, OperationType.HOLD_CAPTURE)

    @precondition(lambda self: self.model.holds)
    @rule(pick=st.integers(0, 50), which=HOLD_CHOICE)
    def void(self, pick: int, which: str) -> None:
        hold_id = self.pick_hold(pick, which)
        h = self.model.holds.get(hold_id)
        predicted: Outcome = None
        if h is None:
            predicted = ("UNKNOWN_HOLD", None)
        elif h.status is not HoldStatus.PENDING:
            predicted = ("HOLD_NOT_PENDING", None)
        outcome = self.submit(VoidHold(hold_id, SYSTEM_ACTOR, "changed mind"))
        self.expect(outcome, predicted)
        if h is not None and predicted is None:
            assert isinstance(outcome, HoldResult) and outcome.status is HoldStatus.VOIDED
            self.model.accounts[h.source].pending -= h.remaining
            h.remaining, h.status = 0, HoldStatus.VOIDED

    # -- reversals -----------------------------------------------------------------------------
    @rule(pick=st.integers(0, 200), unknown=st.sampled_from([False] * 9 + [True]))
    def reverse(self, pick: int, unknown: bool) -> None:
        m = self.model
        ids = sorted(m.operations)
        op = None if unknown or not ids else m.operations[ids[pick % len(ids)]]
        predicted: Outcome = None
        legs: list[tuple[int, str, int]] = []
        if op is None:
            predicted = ("UNKNOWN_OPERATION", None)
        elif op.type is OperationType.REVERSAL:
            predicted = ("NOT_REVERSIBLE", None)
        elif op.reversed:
            predicted = ("ALREADY_REVERSED", None)
        else:
            legs = [(account, asset, -signed) for account, asset, signed in op.entries]
            predicted = m.refusal(legs)
        outcome = self.submit(ReverseOperation(op.id if op else NO_SUCH_ID, "state machine", ADMIN))
        self.expect(outcome, predicted)
        if isinstance(outcome, OperationResult):
            assert op is not None and outcome.reverses == op.id
            m.apply(legs)
            op.reversed = True
            m.record(outcome, OperationType.REVERSAL)

    # -- account status and floors -------------------------------------------------------------
    @rule(asset=st.integers(0, 1), user=st.integers(0, USERS - 1), frozen=st.booleans())
    def set_frozen(self, asset: int, user: int, frozen: bool) -> None:
        account_id = self.account(asset, user)
        status = AccountStatus.FROZEN if frozen else AccountStatus.ACTIVE
        self.run(
            self.ledger.accounts.set_status(account_id, status, actor=ADMIN, reason="state machine")
        )
        self.model.accounts[account_id].frozen = frozen

    @rule(asset=st.integers(0, 1), user=st.integers(0, USERS - 1),
          floor=st.sampled_from([0, 0, -200, 100]))  # fmt: skip
    def set_floor(self, asset: int, user: int, floor: int) -> None:
        """A credit limit (negative floor) or a minimum; refused while the available
        balance is below it (the database CHECK, as INSUFFICIENT_FUNDS)."""
        a = self.model.accounts[self.account(asset, user)]
        predicted: Outcome = ("INSUFFICIENT_FUNDS", None) if a.posted - a.pending < floor else None
        try:
            self.run(
                self.ledger.accounts.set_floor(a.id, floor, actor=ADMIN, reason="state machine")
            )
            outcome: Result | LedgerError | None = None
        except LedgerError as err:
            outcome = err
        if predicted is None:
            assert outcome is None, outcome
            a.floor = floor
        else:
            assert isinstance(outcome, LedgerError) and outcome.code == predicted[0], outcome

    # -- idempotency ---------------------------------------------------------------------------
    @precondition(lambda self: self.keys)
    @rule(pick=st.integers(0, 200), change=st.booleans())
    def reuse_key(self, pick: int, change: bool) -> None:
        """The same key again: the same request replays the first outcome (even if the
        balances would now decide otherwise); a different one is IDEMPOTENCY_CONFLICT."""
        key = list(self.keys)[pick % len(self.keys)]  # insertion order: keys are random
        first = self.keys[key]
        command = first.command
        change = change and bool(command.entries)
        if change:
            e = command.entries[0]
            command = replace(command, entries=(replace(e, amount=e.amount + 1),
                                                *command.entries[1:]))  # fmt: skip
        outcome = self.submit(command)
        if isinstance(first.outcome, str) and first.outcome in VALIDATION_CODES:
            # a malformed request is not remembered: the key is free, the request (changed
            # or not) runs afresh, and what it answers now is what the key remembers
            self.keys.pop(key)
            self.model_post_keyed(command, outcome)
        elif change:
            self.expect(outcome, ("IDEMPOTENCY_CONFLICT", None))
        elif isinstance(first.outcome, OperationResult):
            assert isinstance(outcome, OperationResult), outcome
            assert outcome.replayed and outcome.operation_id == first.outcome.operation_id
            assert outcome.entries == first.outcome.entries
        else:
            self.expect(outcome, (first.outcome, None))

    def model_post_keyed(self, command: PostOperation, outcome: Result | LedgerError) -> None:
        """A keyed command whose earlier validation failure left the key free."""
        predicted = self.model.post(command.entries)
        self.expect(outcome, predicted)
        if isinstance(outcome, OperationResult):
            self.model.record(outcome, command.type)
        stored = outcome if isinstance(outcome, OperationResult) else outcome.code
        self.keys[command.idempotency_key] = Keyed(command, stored)  # type: ignore[index]

    # -- all-or-nothing groups -----------------------------------------------------------------
    @rule(asset=st.integers(0, 1),
          moves=st.lists(st.tuples(PICK, PICK, st.integers(1, 500)), min_size=2, max_size=3))  # fmt: skip
    def linked(self, asset: int, moves: list[tuple[int, int, int]]) -> None:
        code = self.assets[asset]
        commands = [
            PostOperation(OperationType.TRANSFER,
                          transfer_legs(self.account(asset, s), self.account(asset, d), code, n))
            for s, d, n in moves
        ]  # fmt: skip
        m = self.model
        saved = {i: (a.posted, a.pending) for i, a in m.accounts.items()}
        predicted: Outcome = None
        for command in commands:
            predicted = m.post(command.entries)
            if predicted is not None:
                break
        if predicted is not None:  # nothing of the group applies
            for i, (posted, pending) in saved.items():
                m.accounts[i].posted, m.accounts[i].pending = posted, pending
        try:
            results = self.run(self.ledger.post_linked(commands))
        except LedgerError as err:
            self.expect(err, predicted)
            return
        self.expect(results[0], predicted)
        assert len(results) == len(commands)
        for result in results:
            assert isinstance(result, OperationResult)
            m.record(result, OperationType.TRANSFER)

    # -- invariants after every step -----------------------------------------------------------
    @invariant()
    def database_equals_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        m = self.model
        async with self.ledger.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT a.id, a.asset, a.status, b.posted, b.pending, b.floor, "
                        "  (SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e "
                        "   WHERE e.account_id = a.id) AS entries_total, "
                        "  (SELECT coalesce(max(e.seq), 0) FROM ledger_entries e "
                        "   WHERE e.account_id = a.id) AS entries_last_seq, "
                        "  (SELECT e.balance_after FROM ledger_entries e WHERE e.account_id = a.id "
                        "   ORDER BY e.seq DESC LIMIT 1) AS last_after, "
                        "  (SELECT coalesce(sum(h.remaining), 0) FROM holds h "
                        "   WHERE h.source_id = a.id AND h.status = 'PENDING') AS held, "
                        "  b.last_seq "
                        "FROM accounts a JOIN balances b ON b.account_id = a.id "
                        "WHERE a.asset = ANY(:assets) ORDER BY a.id"
                    ),
                    {"assets": self.assets},
                )
            ).all()
            holds = (
                await conn.execute(
                    text("SELECT id, status, remaining FROM holds WHERE id = ANY(:ids)"),
                    {"ids": list(m.holds)},
                )
            ).all()
        for r in rows:
            # cached balances == SUM(entries) == the last balance_after; pending == open holds
            assert r.posted == r.entries_total == (r.last_after or 0), r
            assert (r.pending, r.last_seq) == (r.held, r.entries_last_seq), r
            # accounts the machine never touches (the wallets' other compartments) stay 0
            if r.id not in m.accounts:
                assert (r.posted, r.pending) == (0, 0), r
        found = {r.id: (r.posted, r.pending, r.floor, r.status == "FROZEN") for r in rows}
        expected = {a.id: (a.posted, a.pending, a.floor, a.frozen) for a in m.accounts.values()}
        assert {i: found[i] for i in expected} == expected
        for asset in self.assets:  # value is conserved per asset
            assert sum(r.posted for r in rows if r.asset == asset) == 0, asset
        assert {h.id: (HoldStatus(h.status), h.remaining) for h in holds} == {
            h.id: (h.status, h.remaining) for h in m.holds.values()
        }
        # and the ledger's own reconciler agrees, for this run's accounts and operations
        # (the database is shared by all runs: a drift left by an earlier run is not ours)
        ours = {("account", r.id) for r in rows} | {("operation", i) for i in m.operations}
        drifts = [d for d in await self.ledger.reconcile() if (d.subject, d.id) in ours]
        assert drifts == []


VALIDATION_CODES = {
    cls.code for cls in (UnbalancedOperation, InvalidAmount, AmountOverflow, AssetMismatch)
}


async def db_now(ledger: Ledger) -> datetime:
    async with ledger.engine.connect() as conn:
        return (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()


@pytest.mark.slow
def test_ledger_state_machine() -> None:
    """The model-based test above: about 25 runs of 40 steps (some 1000 commands) of random valid and invalid
    commands. Its own database, so the reconciler and the sums see only its ledger."""
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(create_database())
        ledger = loop.run_until_complete(_connect(url))

        class Machine(LedgerMachine):
            pass

        Machine.loop, Machine.ledger = loop, ledger
        try:
            run_state_machine_as_test(
                Machine,
                settings=settings(
                    max_examples=25,
                    stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow],
                ),
            )
        finally:
            loop.run_until_complete(ledger.close())
            loop.run_until_complete(drop_database(url))
    finally:
        loop.close()


async def _connect(url: str) -> Ledger:
    return Ledger.connect(settings_for(url))
