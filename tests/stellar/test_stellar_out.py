"""Stellar bridge-out against the Soroban RPC stand-in (a test double) and the real database:
refusals before any debit, the envelope stored before it is sent and re-sent unchanged, every
submission status, settlement (mint or refund), value conserved."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from chain.stellar.outbox import StellarOutbox
from core import chain_txs
from core.bridges.erc20 import BridgeOutOrder, BridgeOutState, get_bridge_out
from core.bridges.stellar import MINT_PURPOSE, StellarBridgeOuts, StellarToken
from core.chain_txs import TxStatus
from core.errors import DestinationNotReady, InvalidAddress, ValidationError
from core.types import AccountKind, Actor, OperationType, Role, SystemAccount
from jobs.stellar_out import stellar_out_pass
from tests.conftest import ADMIN, World
from tests.stellar.net import StellarNet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = Actor("stellar-test-user", Role.USER)
FUNDED = 100_00
STROOPS = 123_400_000  # 12.34 at 7 decimals


async def funded_user(world: World) -> tuple[uuid.UUID, int]:
    owner = await world.ledger.accounts.create_user(email=None, actor=ADMIN)
    wallet = await world.ledger.accounts.ensure_wallet(owner, world.asset, actor=ADMIN)
    await world.ledger.transfer(
        source=world.issuance, destination=wallet[AccountKind.AVAILABLE], asset=world.asset,
        amount=FUNDED, type_=OperationType.MINT,
    )  # fmt: skip
    return owner, wallet[AccountKind.AVAILABLE]


async def balances(world: World, account: int) -> tuple[int, int, int]:
    led = world.ledger
    flight = await led.accounts.system_account(world.asset, SystemAccount.IN_FLIGHT, actor=ADMIN)
    out = await led.accounts.system_account(world.asset, SystemAccount.BRIDGED_OUT, actor=ADMIN)
    got = await led.queries.balances([account, flight, out])
    return got[account].posted, got[flight].posted, got[out].posted


def outbox(world: World, net: StellarNet, **kw: object) -> StellarOutbox:
    return StellarOutbox(world.ledger.engine, net.client, net.issuer, net.channels, **kw)  # type: ignore[arg-type]


async def run_until_settled(
    world: World, net: StellarNet, box: StellarOutbox, ref: str, *, closes: int = 20
) -> BridgeOutState:
    for _ in range(closes):
        await stellar_out_pass(world.ledger, box)
        state = (await get_bridge_out(world.ledger, ref, user=None)).state
        if state is not BridgeOutState.IN_FLIGHT:
            return state
        net.standin.close_ledger()
    return state


async def test_mint_end_to_end(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    user, account = await funded_user(world)
    dest = await net.user()
    view = await bridge.bridge_out(
        user, USER, BridgeOutOrder(world.asset, "12.34", dest.public_key), key="k-e2e"
    )
    assert view.state is BridgeOutState.IN_FLIGHT and view.token_amount == STROOPS
    assert await balances(world, account) == (FUNDED - 12_34, 12_34, 0)
    box = outbox(world, net)
    assert await run_until_settled(world, net, box, view.id) is BridgeOutState.MINTED
    assert net.standin.balance(net.contract, dest.public_key) == STROOPS
    assert await balances(world, account) == (FUNDED - 12_34, 0, 12_34)
    tx = await chain_txs.get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, view.id)
    assert (
        tx is not None
        and tx.status is TxStatus.FINALIZED
        and tx.sender in {k.public_key for k in net.channels}
    )
    # the same key answers the stored bridge-out, nothing more is minted
    again = await bridge.bridge_out(
        user, USER, BridgeOutOrder(world.asset, "12.34", dest.public_key), key="k-e2e"
    )
    assert again.id == view.id
    await stellar_out_pass(world.ledger, box)
    assert net.standin.balance(net.contract, dest.public_key) == STROOPS
    assert await world.total() == 0


async def mint_rows(world: World) -> int:
    async with world.ledger.engine.connect() as conn:
        from sqlalchemy import text

        return int(
            (
                await conn.execute(
                    text("SELECT count(*) FROM chain_txs WHERE purpose = 'sac_mint'")
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(
    "case", ["no-trustline", "unauthorized", "no-contract", "muxed", "issuer", "too-big"]
)
async def test_refused_before_any_debit(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts, case: str
) -> None:
    user, account = await funded_user(world)
    amount = "1.00"
    if case == "no-trustline":
        to = (await net.user(trust=False)).public_key
    elif case == "unauthorized":
        kp = await net.user()
        await net.deauthorize(kp)
        to = kp.public_key
    elif case == "no-contract":
        to = "CA3D5KRYM6CB7OWQ6TWYRR3Z4T7GNZLKERYNZGGA5SOAOPIFY6YQGAXE"
    elif case == "muxed":
        to = "MA7QYNF7SOWQ3GLR2BGMZEHXAVIRZA4KVWLTJJFC7MGXUA74P7UJUAAAAAAAAAAAACJUQ"
    elif case == "issuer":
        to = net.issuer.public_key
    else:
        to = (await net.user()).public_key
        amount = "922337203685.48"  # * 10**5 stroops per minor unit: above a trustline's i64
    rows = await mint_rows(world)
    with pytest.raises((DestinationNotReady, InvalidAddress, ValidationError)) as caught:
        await bridge.bridge_out(
            user, USER, BridgeOutOrder(world.asset, amount, to), key=f"r-{case}"
        )
    expected = {"muxed": "INVALID_ADDRESS", "too-big": "VALIDATION_ERROR"}
    assert caught.value.code == expected.get(case, "DESTINATION_NOT_READY")
    assert await balances(world, account) == (FUNDED, 0, 0)
    assert await mint_rows(world) == rows


async def test_unmappable_amount_refused(ledger: object, net: StellarNet) -> None:
    """An asset of scale 8: one minor unit is a tenth of a stroop -> 422 before any debit."""
    from chain.stellar.client import Destinations
    from core.bridges.stellar import register_stellar_token
    from core.directory import Directory
    from tests.conftest import make_world

    fine = await make_world(ledger, scale=8)  # type: ignore[arg-type]
    await register_stellar_token(
        fine.ledger,
        asset=fine.asset,
        passphrase=net.passphrase,
        code=net.code,
        issuer=net.issuer.public_key,
        contract=net.contract,
        actor=ADMIN,
    )
    user, account = await funded_user(fine)
    dest = await net.user()
    bridge = StellarBridgeOuts(Directory(fine.ledger), Destinations(net.client))
    with pytest.raises(ValidationError) as caught:
        await bridge.bridge_out(
            user, USER, BridgeOutOrder(fine.asset, "0.00000011", dest.public_key), key="fine"
        )
    assert caught.value.details["field"] == "amount"
    assert "7 decimals" in caught.value.message
    assert await balances(fine, account) == (FUNDED, 0, 0)
    ok = await bridge.bridge_out(
        user, USER, BridgeOutOrder(fine.asset, "0.0000001", dest.public_key), key="fine-ok"
    )
    assert ok.token_amount == 1


def oracle(passphrase: str, envelopes: list[bytes]) -> list[dict[str, Any]]:
    """The envelopes as the JavaScript @stellar/stellar-sdk decodes them (tests/stellar/oracle.cjs)."""
    got = subprocess.run(  # noqa: S603
        ["node", str(ROOT / "tests/stellar/oracle.cjs")],  # noqa: S607
        input=json.dumps({"passphrase": passphrase,
                          "envelopes": [base64.b64encode(e).decode() for e in envelopes]}),
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    return list(json.loads(got.stdout))


async def test_persisted_envelopes_checked_by_an_independent_implementation(
    world: World, net: StellarNet, token: StellarToken, bridge: StellarBridgeOuts
) -> None:
    """The stand-in proves the plumbing; the JS SDK proves the bytes: hash, both signatures
    (channel on the envelope, admin on the authorization entry), contract, function, args."""
    dests = [await net.user() for _ in range(3)]
    refs = []
    for i, dest in enumerate(dests):
        user, _ = await funded_user(world)
        view = await bridge.bridge_out(
            user, USER, BridgeOutOrder(world.asset, f"{i + 1}.05", dest.public_key), key=f"o-{i}"
        )
        refs.append(view.id)
    box = outbox(world, net)
    for ref in refs:
        state = await run_until_settled(world, net, box, ref)
        row = await chain_txs.get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, ref)
        assert state is BridgeOutState.MINTED, row
    rows = [await chain_txs.get_tx_by_ref(world.ledger.engine, MINT_PURPOSE, r) for r in refs]
    assert all(r is not None and r.raw_tx is not None for r in rows)
    decoded = oracle(net.passphrase, [r.raw_tx for r in rows])  # type: ignore[union-attr, misc]
    channels = {k.public_key for k in net.channels}
    for i, (row, js) in enumerate(zip(rows, decoded, strict=True)):
        assert row is not None
        assert js["hash"] == row.tx_hash.hex()  # type: ignore[union-attr]
        assert js["source"] == row.sender and js["source"] in channels
        assert int(js["sequence"]) == row.nonce
        assert [s["source_signed"] for s in js["signatures"]] == [True]
        assert js["contract"] == net.contract == token.contract
        assert js["function"] == "mint"
        assert js["args"] == [dests[i].public_key, str((i + 1) * 10**7 + 5 * 10**5)]
        assert int(js["max_time"]) > 0
        [auth] = js["auth"]
        assert auth["address"] == net.issuer.public_key
        assert auth["signed_by_address"] is True
        assert auth["contract"] == net.contract and auth["function"] == "mint"
        assert auth["args_match_call"] is True
    # and a tampered envelope is caught by the oracle (the check can fail)
    tampered = bytearray(rows[0].raw_tx)  # type: ignore[union-attr, arg-type]
    tampered[-5] ^= 0x01  # inside the channel's signature
    [bad] = oracle(net.passphrase, [bytes(tampered)])
    assert [s["source_signed"] for s in bad["signatures"]] == [False]
