"""Chainlink feeds on a real anvil: Chainlink's MockV3Aggregator (PriceFeedMock, a test double of
an aggregator) is deployed, rounds are pushed, and the worker's feed pass records them through
the core: a fresh round is accepted and moves the price; zero, negative, out-of-order and stale
rounds freeze the asset, and the risk tick then leaves its positions alone."""

from __future__ import annotations

import time

import pytest
from web3 import Web3
from web3.contract import Contract

from chain.evm.client import connect
from core.ledger import Ledger
from core.risk.prices import Verdict, asset_price
from jobs.risk import poll_feeds
from tests.chain.conftest import Deploy
from tests.integration.risk_support import COLL, make_desk, usd

pytestmark = pytest.mark.chain

DECIMALS = 8


def now(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


@pytest.fixture
def feed(deploy: Deploy) -> Contract:
    return deploy("PriceFeedMock", DECIMALS, 2_000 * 10**DECIMALS)


async def test_rounds_pushed_on_chain_drive_the_price_and_bad_ones_freeze(
    ledger: Ledger, anvil: str, w3: Web3, feed: Contract, deployer: str
) -> None:
    # the session's anvil may run behind the wall clock (snapshots revert its time): bring it
    # to now, so the chain's rounds and the desk's pushed price (wall clock) are comparable
    w3.provider.make_request(
        "evm_setNextBlockTimestamp",  # type: ignore[arg-type]
        [max(now(w3) + 1, int(time.time()))],
    )
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    desk = await make_desk(ledger)
    line = await desk.line(COLL, spend=usd(1_000))
    reader = connect(anvil)
    feeds = {desk.coll: feed.address}

    # anvil's clock is the feed's: the desk's push price (wall clock) may diverge in time, so
    # the chain's round is judged on its own (a different value from the push is DIVERGENT)
    # two rounds a second apart (a block's timestamp may repeat within one second)
    first = int(time.time()) - 2
    feed.functions.updateRoundData(10, 2_000 * 10**DECIMALS, first, first).transact(
        {"from": deployer}
    )
    assert await poll_feeds(ledger, reader, feeds) == {desk.coll: Verdict.ACCEPTED}
    assert await poll_feeds(ledger, reader, feeds) == {desk.coll: Verdict.DUPLICATE}

    feed.functions.updateRoundData(11, 1_300 * 10**DECIMALS, first + 1, first + 1).transact(
        {"from": deployer}
    )
    # 1,300 vs the push source's fresh 2,000: beyond the 2% bound
    assert await poll_feeds(ledger, reader, feeds) == {desk.coll: Verdict.DIVERGENT}
    assert (await asset_price(ledger.engine, desk.coll)).frozen

    for round_id, answer, age, verdict in [
        (12, 0, 0, Verdict.NON_POSITIVE),
        (13, -1, 0, Verdict.NON_POSITIVE),
        (9, 2_000 * 10**DECIMALS, 0, Verdict.OUT_OF_ORDER),
        (14, 2_000 * 10**DECIMALS, 7_200, Verdict.STALE),
    ]:
        at = now(w3) - age
        feed.functions.updateRoundData(round_id, answer, at, at).transact({"from": deployer})
        assert await poll_feeds(ledger, reader, feeds) == {desk.coll: verdict}
        price = await asset_price(ledger.engine, desk.coll)
        assert price.frozen and price.frozen_reason == verdict.value
        assert (await desk.loop.tick(desk.coll)).actions == {}

    # a fresh good round from the chain lifts the freeze
    feed.functions.updateAnswer(2_010 * 10**DECIMALS).transact({"from": deployer})
    round_id = feed.functions.latestRound().call()
    assert round_id == 15
    assert await poll_feeds(ledger, reader, feeds) == {desk.coll: Verdict.ACCEPTED}
    price = await asset_price(ledger.engine, desk.coll)
    assert not price.frozen and price.answer == 2_010 * 10**DECIMALS
    assert (await desk.lines.get(line.id)).collateral == COLL
