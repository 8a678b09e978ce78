"""Credit lines on the real database: collateral in and out, card spends bounded by the limit,
price freezes, the risk loop's ladder, interest, a repayment racing a liquidation, and value
conserved throughout."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from core.errors import InsufficientFunds, LtvBreach, PriceFrozen
from core.ledger import Ledger
from core.risk.math import ActionKind
from core.risk.prices import Verdict
from core.types import AccountKind, EntrySpec, OperationType, PostOperation, Side, SystemAccount
from tests.integration.risk_support import ADMIN, COLL, Desk, make_desk, usd

pytestmark = pytest.mark.integration


@pytest.fixture
async def desk(ledger: Ledger) -> Desk:
    return await make_desk(ledger)


async def conserved(desk: Desk) -> None:
    assert set((await desk.totals()).values()) == {0}
    assert await desk.ledger.reconcile() == []


async def test_limit_follows_collateral_and_bounds_card_spends(desk: Desk) -> None:
    line = await desk.line(COLL)  # 1 wETH at $2,000: haircut floor 10% -> $1,800, initial 50%
    state = await desk.lines.get(line.id)
    assert state.line.credit_limit == usd(1_000)
    await desk.spend(line.id, usd(1_000))  # exactly the limit
    with pytest.raises(InsufficientFunds):
        await desk.spend(line.id, 1)  # one cent more
    await conserved(desk)


async def test_withdrawal_only_while_under_initial_ltv(desk: Desk) -> None:
    line = await desk.line(2 * COLL, spend=usd(1_000))  # $4,000 collateral, LTV 25%
    await desk.lines.withdraw(line.id, COLL, ADMIN)  # LTV exactly 50%: allowed
    before = await desk.totals()
    with pytest.raises(LtvBreach):
        await desk.lines.withdraw(line.id, 1, ADMIN)  # one gwei more breaches
    assert await desk.totals() == before
    state = await desk.lines.get(line.id)
    assert state.collateral == COLL
    await conserved(desk)


@pytest.mark.parametrize(
    ("answer", "at_offset", "round_offset", "verdict"),
    [
        (0, 0, 1, Verdict.NON_POSITIVE),
        (-5, 0, 1, Verdict.NON_POSITIVE),
        (1_900, -7_200, 1, Verdict.STALE),
        (1_900, 0, -5, Verdict.OUT_OF_ORDER),
    ],
)
async def test_bad_prices_freeze_the_asset(
    desk: Desk, answer: int, at_offset: int, round_offset: int, verdict: Verdict
) -> None:
    line = await desk.line(COLL, spend=usd(1_000))
    assert await desk.price(900) is Verdict.ACCEPTED  # LTV 111%: past full liquidation
    at = datetime.now(UTC) + timedelta(seconds=at_offset)
    got = await desk.price(answer, at=at, round_id=desk.round_id + round_offset)
    assert got is verdict
    await desk.loop.refresh_moved_prices()
    state = await desk.lines.get(line.id)
    assert state.frozen and state.line.credit_limit == 0  # no new credit
    with pytest.raises(InsufficientFunds):
        await desk.spend(line.id, 1)
    report = await desk.loop.tick(desk.coll)  # and no liquidation on an untrusted price
    assert report.actions == {}
    assert (await desk.lines.get(line.id)).collateral == COLL
    # a good round lifts the freeze, and the loop acts again
    assert await desk.price(2_000, round_id=desk.round_id + 10) is Verdict.ACCEPTED
    assert not (await desk.lines.get(line.id)).frozen
    await conserved(desk)


async def test_divergent_sources_freeze(desk: Desk) -> None:
    assert await desk.price(2_000, source="chainlink") is Verdict.ACCEPTED
    assert await desk.price(2_041, source="push") is Verdict.DIVERGENT  # > 2%
    assert (await desk.lines.get((await desk.line(COLL)).id)).frozen


async def test_the_ladder_over_ticks(desk: Desk) -> None:
    line = await desk.line(COLL, spend=usd(1_000))  # LTV 50%
    assert (await desk.loop.tick(desk.coll)).actions == {}
    await desk.lines.credit_yield(line.id, usd(20), ADMIN, "yield-1")
    await desk.price(1_500)  # LTV 66.7%: over margin call
    assert (await desk.loop.tick(desk.coll)).actions == {"CUSHION": 1}
    assert (await desk.loop.tick(desk.coll)).actions == {"NOTIFY": 1}
    assert (await desk.loop.tick(desk.coll)).actions == {}  # notified once per crossing
    await desk.price(1_300)  # LTV 75.4%: over partial
    report = await desk.loop.tick(desk.coll)
    assert report.actions == {"PARTIAL": 1}
    state = await desk.lines.get(line.id)
    assert state.debt * 10_000 <= state.value * 6_000  # back to target
    await desk.price(500)  # gap past full in one tick
    assert (await desk.loop.tick(desk.coll)).actions == {"FULL": 1}
    state = await desk.lines.get(line.id)
    assert state.debt == 0
    await conserved(desk)


async def test_full_liquidation_shortfall_goes_to_bad_debt(desk: Desk) -> None:
    line = await desk.line(COLL, spend=usd(1_000))
    await desk.price(900)  # collateral sells for $855 against $1,000 of debt
    assert (await desk.loop.tick(desk.coll)).actions == {"FULL": 1}
    state = await desk.lines.get(line.id)
    assert state.debt == 0 and state.collateral == 0
    async with desk.ledger.engine.connect() as conn:
        details = (
            await conn.execute(
                text("SELECT details FROM risk_events WHERE line_id = :l"), {"l": line.id}
            )
        ).scalar_one()
    assert details["shortfall"] == usd(1_000) - usd(855)
    await conserved(desk)


async def test_stop_loss_sells_and_returns_the_surplus(desk: Desk) -> None:
    line = await desk.line(COLL, spend=usd(500))
    await desk.lines.set_stop_loss(line.id, 1_800 * 10**8, ADMIN)
    await desk.price(1_800)
    assert (await desk.loop.tick(desk.coll)).actions == {"STOP_LOSS": 1}
    assert await desk.balance(line.available_account_id) == usd(1_710) - usd(500)
    await conserved(desk)


async def test_interest_is_charged_once_per_day_across_a_month(desk: Desk) -> None:
    line = await desk.line(COLL, spend=usd(1_000))
    start = date(2026, 1, 1)
    for offset in range(31):
        day = start + timedelta(days=offset)
        await desk.lines.accrue_interest(day, ADMIN)
        await desk.lines.accrue_interest(day, ADMIN)  # again: nothing more
    owed = -await desk.balance(line.credit_account_id)
    # the same days computed independently: daily charge rounded down, remainder carried
    expected, carry, total = 0, 0, usd(1_000)
    for _ in range(31):
        interest, carry = divmod(carry + total * 1_500, 10_000 * 365)
        expected += interest
        total += interest
    assert owed == usd(1_000) + expected
    assert expected > 0
    await conserved(desk)


async def test_a_repayment_racing_a_liquidation_is_serialized(desk: Desk) -> None:
    from core.risk.repayments import Repayments

    repayments = Repayments(desk.ledger)
    for _ in range(5):
        line = await desk.line(COLL, spend=usd(1_000))
        await desk.price(1_300)  # LTV 76.9%: partial
        repayment = await repayments.initiate(line.id, usd(400), "card", ADMIN)
        loop_task = asyncio.create_task(desk.loop.act(line.id, tick=desk.round_id))
        repay_task = asyncio.create_task(
            repayments.settle(repayment.id, f"evt-{line.id}", succeeded=True, actor=ADMIN)
        )
        kind, _ = await asyncio.gather(loop_task, repay_task)
        state = await desk.lines.get(line.id)
        if kind is ActionKind.NONE:  # the repayment came first: $600 owed, LTV 46%
            assert state.collateral == COLL and state.debt == usd(600)
        else:  # the liquidation came first, then the repayment paid what was left
            assert kind is ActionKind.PARTIAL
            assert state.collateral < COLL
        # whatever the order, each decided on the balance the ledger had when it posted: the
        # liquidation saw exactly the debt its entry followed (no repayment slipped between)
        async with desk.ledger.engine.connect() as conn:
            legs = (
                await conn.execute(
                    text(
                        "SELECT o.type, e.amount, e.balance_after, ev.details FROM "
                        "ledger_entries e JOIN operations o ON o.id = e.operation_id "
                        "LEFT JOIN risk_events ev ON ev.operation_id = o.id "
                        "WHERE e.account_id = :a ORDER BY e.seq"
                    ),
                    {"a": line.credit_account_id},
                )
            ).all()
        for leg in legs:
            if leg.type == "LIQUIDATION":
                assert leg.details["debt"] == -(leg.balance_after - leg.amount)
        assert [leg.type for leg in legs][-1] in {"REPAYMENT", "LIQUIDATION"}
        await desk.price(2_000)
    await conserved(desk)


async def test_a_repayment_posted_before_a_crash_is_adopted_not_posted_again(desk: Desk) -> None:
    from core.risk.repayments import Repayments, RepaymentStatus

    repayments = Repayments(desk.ledger)
    line = await desk.line(COLL, spend=usd(500))
    repayment = await repayments.initiate(line.id, usd(800), "CARD", ADMIN)
    # the attempt that died after posting (split of that moment: $500 owed, $300 over) and
    # before recording it on the row
    omnibus = await desk.ledger.accounts.system_account(
        desk.debt, SystemAccount.OMNIBUS, actor=ADMIN
    )
    await desk.ledger.post(
        PostOperation(
            OperationType.REPAYMENT,
            (
                EntrySpec(omnibus, desk.debt, usd(800), Side.DEBIT),
                EntrySpec(line.credit_account_id, desk.debt, usd(500), Side.CREDIT),
                EntrySpec(line.available_account_id, desk.debt, usd(300), Side.CREDIT),
            ),
            ADMIN,
            f"repayment:{repayment.id}",
        )
    )
    await desk.spend(line.id, usd(100))  # the debt moved: a fresh split would differ
    settled = await repayments.settle(repayment.id, "evt-retry", succeeded=True, actor=ADMIN)
    assert settled.status is RepaymentStatus.SUCCEEDED
    assert (settled.repaid, settled.overpaid) == (usd(500), usd(300))
    async with desk.ledger.engine.connect() as conn:
        posted = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM operations WHERE type = 'REPAYMENT' "
                    "AND idempotency_key = :k"
                ),
                {"k": f"repayment:{repayment.id}"},
            )
        ).scalar_one()
    assert posted == 1
    assert await desk.balance(line.credit_account_id) == -usd(100)
    await conserved(desk)


async def test_limits_follow_the_price_in_chunks(desk: Desk) -> None:
    """A price move is refreshed a chunk of lines per transaction: every line, across chunk
    boundaries, ends with the limit and floor its collateral gives at the new price; the
    asset is marked refreshed only after its last chunk."""
    lines = [await desk.line(COLL * (i + 1), spend=usd(100)) for i in range(5)]
    before = [(await desk.lines.get(line.id)).line.credit_limit for line in lines]
    await desk.price(1_000)  # half: every limit halves (50% initial LTV caps the haircut's)

    async def floor(account_id: int) -> int:
        async with desk.ledger.engine.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text("SELECT floor FROM balances WHERE account_id = :a"),
                        {"a": account_id},
                    )
                ).scalar_one()
            )

    async def marked() -> bool:
        async with desk.ledger.engine.connect() as conn:
            return bool(
                (
                    await conn.execute(
                        text(
                            "SELECT limits_at IS NOT DISTINCT FROM updated_at FROM risk_assets "
                            "WHERE asset = :a"
                        ),
                        {"a": desk.coll},
                    )
                ).scalar_one()
            )

    assert not await marked()
    await desk.loop.refresh_moved_prices(chunk=2)
    assert await marked()
    for line, old in zip(lines, before, strict=True):
        state = await desk.lines.get(line.id)
        assert state.line.credit_limit * 2 in (old, old - 1)  # rounded down at the new price
        assert await floor(line.credit_account_id) == -state.line.credit_limit
    await conserved(desk)


async def test_a_refused_withdrawal_is_remembered_under_its_key(desk: Desk) -> None:
    """The withdrawal posts inside the line's transaction; a refusal still commits its record,
    so a retry under the key answers the same refusal once the line could afford it."""
    line = await desk.line(COLL)
    with pytest.raises(InsufficientFunds):
        await desk.lines.withdraw(line.id, 2 * COLL, ADMIN, "too-much")
    owner = (await desk.lines.get(line.id)).line.owner_id
    wallet = await desk.ledger.accounts.ensure_wallet(owner, desk.coll, actor=ADMIN)
    issuance = await desk.ledger.accounts.system_account(
        desk.coll, SystemAccount.ISSUANCE, actor=ADMIN
    )
    await desk.ledger.transfer(
        source=issuance, destination=wallet[AccountKind.AVAILABLE], asset=desk.coll,
        amount=COLL, type_=OperationType.MINT,
    )  # fmt: skip
    await desk.lines.deposit(line.id, COLL, ADMIN)  # now 2 COLL are there
    with pytest.raises(InsufficientFunds):  # the key remembers the refusal
        await desk.lines.withdraw(line.id, 2 * COLL, ADMIN, "too-much")
    await desk.lines.withdraw(line.id, 2 * COLL, ADMIN, "enough")
    assert (await desk.lines.get(line.id)).collateral == 0
    await conserved(desk)


async def test_an_authorization_meets_the_current_price_limit(desk: Desk) -> None:
    """After a price drop, before any refresh of the stored limits, a card authorization is
    bounded by the limit at the new price (the line's limit is refreshed first), not the old
    one."""
    line = await desk.line(COLL)  # $2,000 of collateral: limit $1,000 (50% initial LTV)
    assert (await desk.lines.get(line.id)).line.credit_limit == usd(1_000)
    await desk.price(1_000)  # limit $500 at the new price; the stored one is still $1,000
    assert (await desk.lines.get(line.id)).line.credit_limit == usd(1_000)
    with pytest.raises(InsufficientFunds):
        await desk.spend(line.id, usd(600))
    assert (await desk.lines.get(line.id)).line.credit_limit == usd(500)
    await desk.spend(line.id, usd(500))
    with pytest.raises(InsufficientFunds):
        await desk.spend(line.id, 1)
    await conserved(desk)


async def test_an_authorization_on_a_price_past_its_heartbeat_is_refused(desk: Desk) -> None:
    """A price older than its heartbeat gives no new credit even before a tick freezes the
    asset."""
    line = await desk.line(COLL)
    async with desk.ledger.engine.begin() as conn:  # the last accepted price, two hours old
        await conn.execute(
            text(
                "UPDATE risk_assets SET price_at = price_at - interval '2 hours' WHERE asset = :a"
            ),
            {"a": desk.coll},
        )
    with pytest.raises(PriceFrozen):
        await desk.spend(line.id, usd(1))
    assert (await desk.lines.get(line.id)).debt == 0
