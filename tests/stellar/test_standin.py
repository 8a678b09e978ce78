"""The Soroban RPC stand-in (a test double) refuses what a network would: each check is shown
failing a transaction the unmodified SDK built and signed otherwise correctly."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest
from stellar_sdk import Keypair, TransactionEnvelope
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import SorobanRpcErrorResponse

from chain.stellar.client import Envelope, SendStatus, StellarClient
from tests.stellar.net import StellarNet, make_net

pytestmark = pytest.mark.integration


@pytest.fixture
async def net() -> AsyncIterator[StellarNet]:
    found = make_net("VCR")
    await found.deploy()
    yield found
    await found.client.close()
    found.served.stop()


async def mint(
    net: StellarNet,
    to: str,
    *,
    admin: Keypair | None = None,
    seq_ahead: int = 1,
    client: StellarClient | None = None,
    channel: int = 0,
) -> Envelope:
    kp = net.channels[channel]
    seq = await net.client.account_seq(kp.public_key)
    assert seq is not None
    return await (client or net.client).build_mint(
        contract=net.contract,
        to=to,
        amount=10**7,
        channel=kp,
        seq=seq + seq_ahead,
        admin=admin or net.issuer,
        timeout_s=30,
    )


async def applied(net: StellarNet, xdr: str) -> str:
    sent = await net.client.send(xdr)
    assert sent.status is SendStatus.PENDING, sent
    net.standin.close_ledger()
    te = TransactionEnvelope.from_xdr(xdr, net.passphrase)
    return (await net.client.seen(te.hash())).status


def resigned(net: StellarNet, xdr: str, change: object) -> str:
    te = TransactionEnvelope.from_xdr(xdr, net.passphrase)
    change(te.transaction)  # type: ignore[operator]
    te.signatures = []
    te.sign(net.channels[0])
    return te.to_xdr()


async def test_a_correct_mint_applies(net: StellarNet) -> None:
    user = await net.user()
    env = await mint(net, user.public_key)
    assert await applied(net, env.xdr) == "SUCCESS"
    assert net.standin.balance(net.contract, user.public_key) == 10**7


async def test_signed_for_another_network(net: StellarNet) -> None:
    user = await net.user()
    other = StellarClient(net.served.url, "Test SDF Network ; September 2015")
    env = await mint(net, user.public_key, client=other)
    assert (await net.client.send(env.xdr)).error == "txBAD_AUTH"
    await other.close()


async def test_envelope_signatures(net: StellarNet) -> None:
    user = await net.user()
    env = await mint(net, user.public_key)
    te = TransactionEnvelope.from_xdr(env.xdr, net.passphrase)
    bare = copy.deepcopy(te)
    bare.signatures = []
    assert (await net.client.send(bare.to_xdr())).error == "txBAD_AUTH"
    extra = copy.deepcopy(te)
    extra.sign(Keypair.random())
    assert (await net.client.send(extra.to_xdr())).error == "txBAD_AUTH_EXTRA"
    forged = copy.deepcopy(te)
    forged.signatures = []
    forged.sign(Keypair.random())
    assert (await net.client.send(forged.to_xdr())).error == "txBAD_AUTH"


async def test_admin_authorization_entry(net: StellarNet) -> None:
    """Not the SAC's admin, a tampered signature, a replayed nonce: the call fails, nothing is
    minted."""
    user = await net.user()
    stranger = await mint(net, user.public_key, admin=Keypair.random())
    assert await applied(net, stranger.xdr) == "FAILED"

    good = await mint(net, user.public_key)

    def tamper(tx: object) -> None:
        entry = tx.operations[0].auth[0]  # type: ignore[attr-defined]
        sig = entry.credentials.address.signature.vec.sc_vec[0].map.sc_map[1].val.bytes
        sig.sc_bytes = bytes([sig.sc_bytes[0] ^ 1]) + sig.sc_bytes[1:]

    assert await applied(net, resigned(net, good.xdr, tamper)) == "FAILED"
    assert net.standin.balance(net.contract, user.public_key) == 0
    first = await mint(net, user.public_key)
    assert await applied(net, first.xdr) == "SUCCESS"
    replay = await mint(net, user.public_key)
    entry = TransactionEnvelope.from_xdr(first.xdr, net.passphrase).transaction.operations[0].auth  # type: ignore[attr-defined]

    def reuse(tx: object) -> None:
        tx.operations[0].auth = entry  # type: ignore[attr-defined]

    assert await applied(net, resigned(net, replay.xdr, reuse)) == "FAILED"
    assert net.standin.balance(net.contract, user.public_key) == 10**7


async def test_sequence_time_bounds_fee_queue(net: StellarNet) -> None:
    user = await net.user()
    ahead = await mint(net, user.public_key, seq_ahead=5)
    assert (await net.client.send(ahead.xdr)).error == "txBAD_SEQ"
    env = await mint(net, user.public_key)
    cheap = resigned(net, env.xdr, lambda tx: setattr(tx.soroban_data, "resource_fee", x.Int64(1)))  # type: ignore[attr-defined]
    assert (await net.client.send(cheap)).error == "txINSUFFICIENT_FEE"
    low = resigned(
        net, env.xdr, lambda tx: setattr(tx, "fee", tx.soroban_data.resource_fee.int64 + 10)
    )  # type: ignore[attr-defined]
    assert (await net.client.send(low)).error == "txINSUFFICIENT_FEE"
    assert (await net.client.send(env.xdr)).status is SendStatus.PENDING
    second = await mint(net, user.public_key, seq_ahead=2)
    assert (await net.client.send(second.xdr)).status is SendStatus.TRY_AGAIN_LATER
    assert (await net.client.send(env.xdr)).status is SendStatus.DUPLICATE
    net.standin.close_ledger()
    late = await mint(net, user.public_key)
    net.standin.close_ledger(now=late.max_time + 1)
    assert (await net.client.send(late.xdr)).error == "txTOO_LATE"


async def test_footprint_and_trustline(net: StellarNet) -> None:
    user = await net.user()
    env = await mint(net, user.public_key)

    def shrink(tx: object) -> None:
        tx.soroban_data.resources.footprint.read_write = []  # type: ignore[attr-defined]

    assert await applied(net, resigned(net, env.xdr, shrink)) == "FAILED"
    await net.deauthorize(user)
    with pytest.raises(Exception, match="not authorized"):
        await mint(net, user.public_key)


async def test_burn_needs_the_holder_and_history_has_a_window(net: StellarNet) -> None:
    user = await net.user()
    assert await applied(net, (await mint(net, user.public_key)).xdr) == "SUCCESS"
    await net.burn(user, 4 * 10**6)
    assert net.standin.balance(net.contract, user.public_key) == 6 * 10**6
    events, _, _ = await net.client.events([net.contract], start_ledger=net.standin.oldest_ledger)
    assert [(e.kind, e.address, e.amount) for e in events] == [
        ("mint", user.public_key, 10**7),
        ("burn", user.public_key, 4 * 10**6),
    ]
    assert events[0].asset == f"VCR:{net.issuer.public_key}"
    net.standin.retention_ledgers = 2
    net.standin.close_ledger(count=3)
    with pytest.raises(SorobanRpcErrorResponse, match="oldest ledger"):
        await net.client.server.get_events(start_ledger=events[0].ledger, filters=None)
