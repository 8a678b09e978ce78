"""The ERC-20 bridge-in job body: read the tokens' ``Redeemed`` events from final blocks and
credit them back to the ledger (:mod:`core.bridges.redemptions`).

One pass, for each bridge token registered on the node's chain:

1. the final block: ``head - confirmations + 1`` (a block with ``confirmations`` blocks on top
   of and including it), or with :attr:`Finality.FINALIZED` the node's ``finalized`` block
   (the depth when the node has no such tag), as the outbox decides for its transactions;
2. from the token's cursor up to the final block, in pages of ``page_blocks`` blocks: read the
   page's events (one ``eth_getLogs``), record them, settle the pending ones up to the page's
   last block (each one's block hash re-checked against the canonical chain first), then move
   the cursor past the page.

The cursor moves only after its page is recorded and settled: a crash re-reads the page, and
re-recording is a no-op, settling is exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.evm.bridge_token import BridgeTokenClient
from chain.evm.client import EvmClient
from chain.evm.outbox import Finality
from core.bridges.redemptions import (
    Outcome,
    RedemptionKey,
    advance_cursor,
    chain_tokens,
    credit_final,
    next_block,
    record_redemptions,
)
from core.ledger import Ledger
from core.types import Actor, Role

log = logging.getLogger(__name__)

BRIDGE_IN_ACTOR = Actor("worker:bridge-in", Role.SYSTEM)
#: blocks per ``eth_getLogs`` call unless configured
PAGE_BLOCKS = 1000

#: a token's address -> its client (reads only)
TokenReader = Callable[[str], BridgeTokenClient]


@dataclass
class BridgeInPass:
    final_block: int = -1
    pages: int = 0
    recorded: int = 0
    settled: dict[RedemptionKey, Outcome] = field(default_factory=dict)


async def final_block(chain: EvmClient, confirmations: int, finality: Finality) -> int:
    """The highest block whose events count as final (-1: none yet)."""
    if finality is Finality.FINALIZED:
        tagged = await chain.finalized_block()
        if tagged is not None:
            return tagged
    return await chain.head() - confirmations + 1


async def bridge_in_pass(
    ledger: Ledger,
    chain: EvmClient,
    reader: TokenReader,
    *,
    confirmations: int,
    finality: Finality = Finality.DEPTH,
    page_blocks: int = PAGE_BLOCKS,
    start_block: int = 0,
) -> BridgeInPass:
    if confirmations < 1 or page_blocks < 1:
        raise ValueError("confirmations and page_blocks must be at least 1")
    chain_id = await chain.chain_id()
    result = BridgeInPass(final_block=await final_block(chain, confirmations, finality))
    for token in await chain_tokens(ledger, chain_id):
        client = reader(token.address)
        cursor = await next_block(ledger, chain_id, token.address, start=start_block)
        while cursor <= result.final_block:
            last = min(result.final_block, cursor + page_blocks - 1)
            page = await client.redemptions(cursor, last)
            result.recorded += await record_redemptions(ledger, chain_id, token.address, page)
            result.settled |= await credit_final(
                ledger, chain_id, token, up_to_block=last, canonical=chain.block_hash,
                actor=BRIDGE_IN_ACTOR,
            )  # fmt: skip
            if not await advance_cursor(ledger, chain_id, token.address, cursor, last + 1):
                log.warning("bridge-in %s: another pass moved the cursor; stopping", token.asset)
                break
            result.pages += 1
            cursor = last + 1
    for key, outcome in result.settled.items():
        log.info("redemption %s: %s", key, outcome)
    return result
