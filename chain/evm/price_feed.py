"""Chainlink ``AggregatorV3Interface`` price feeds read over RPC.

:func:`read_round` calls ``decimals()`` and ``latestRoundData()`` on a feed and returns the round
as :class:`core.risk.prices.PriceRound` (``source="chainlink"``) for the core to judge: the core
decides freshness, sign, order and divergence (:func:`core.risk.prices.record_round`), so this
module only reads. ``answeredInRound < roundId`` (an answer carried over from an earlier round) is
reported with the older round id, which the core then refuses as out of order.

The ABI is the compiled ``PriceFeed`` interface (contracts/PriceFeeds.sol, Chainlink's own).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from chain.evm.artifacts import load_artifact
from chain.evm.client import ChainError
from core.risk.prices import PriceRound

SOURCE = "chainlink"


async def read_round(w3: AsyncWeb3[Any], asset: str, feed: str) -> PriceRound:
    """The feed's latest round for ``asset`` (raises :class:`ChainError` on RPC failure)."""
    contract = w3.eth.contract(
        address=AsyncWeb3.to_checksum_address(feed), abi=load_artifact("PriceFeed").abi
    )
    try:
        decimals = int(await contract.functions.decimals().call())
        latest = await contract.functions.latestRoundData().call()
    except (Web3Exception, OSError, ValueError) as exc:
        raise ChainError(f"price feed {feed} unreadable: {exc}") from exc
    round_id, answer, _, updated_at, answered_in = latest
    return PriceRound(
        asset, SOURCE, int(min(round_id, answered_in)), int(answer), decimals,
        datetime.fromtimestamp(int(updated_at), UTC),
    )  # fmt: skip
