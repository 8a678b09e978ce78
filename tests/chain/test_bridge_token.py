"""BridgeToken on a real anvil node: roles, mint rules, the rate-limit window, pause, redeem,
batches, permit, the Python binding, and gas.

The window is checked against :class:`Bucket`, a transcription of the rule documented in
contracts/BridgeToken.sol and contracts/README.md, with every block's timestamp set exactly
(``evm_setNextBlockTimestamp`` / ``evm_mine``). Transactions whose outcome depends on the
timestamp carry an explicit gas limit, so web3 never estimates them at another time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_account import Account
from eth_typing import ChecksumAddress
from eth_utils import keccak
from hexbytes import HexBytes
from web3 import AsyncWeb3, Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError
from web3.logs import DISCARD
from web3.types import TxReceipt

from chain.evm.artifacts import load_artifact
from chain.evm.bridge_token import (
    BridgeTokenClient,
    Redemption,
    deploy_bridge_token,
    mint_batch_calldata,
)
from chain.evm.client import ChainError, connect
from core.bridges.erc20 import mint_calldata
from merkle.tree import keccak256
from tests.chain.conftest import Deploy, await_automine, rpc

pytestmark = pytest.mark.chain

ZERO_ADDRESS = "0x" + "00" * 20
PER_TRANSFER_CAP = 1_000
WINDOW_CAP = 10_000
WINDOW_SECONDS = 100  # refills 100 base units per second
#: a gas limit that skips web3's estimate (which would run at another timestamp, or revert)
GAS = 3_000_000


def bid(n: int) -> bytes:
    return keccak(text=f"bridge-id-{n}")


def ledger_ref(account_id: int) -> bytes:
    return account_id.to_bytes(32, "big")


# ---------------------------------------------------------------------------------------------
# Helpers


def error_selectors(contract: Contract) -> dict[bytes, tuple[str, list[str]]]:
    out = {}
    for e in contract.abi:
        if e["type"] == "error":
            types = [i["type"] for i in e["inputs"]]
            out[keccak(text=f"{e['name']}({','.join(types)})")[:4]] = (e["name"], types)
    return out


def decode_revert(contract: Contract, data: Any) -> tuple[str, tuple[Any, ...]]:
    assert isinstance(data, str), f"no revert data: {data!r}"
    raw = bytes.fromhex(data.removeprefix("0x"))
    name, types = error_selectors(contract)[raw[:4]]
    return name, tuple(decode(types, raw[4:]))


def assert_reverts(
    contract: Contract,
    fn: ContractFunction,
    sender: str,
    error: str,
    args: tuple[Any, ...],
    block: int | str = "latest",
) -> None:
    """The call (at ``block``) reverts with custom error ``error(args)``."""
    with pytest.raises(ContractCustomError) as info:
        fn.call({"from": sender}, block_identifier=block)
    assert decode_revert(contract, info.value.data) == (error, args)


def send(w3: Web3, fn: ContractFunction, sender: str, gas: int | None = GAS) -> TxReceipt:
    params: dict[str, Any] = {"from": sender}
    if gas is not None:
        params["gas"] = gas
    return w3.eth.wait_for_transaction_receipt(fn.transact(params), timeout=30)  # type: ignore[arg-type]


def ok(w3: Web3, fn: ContractFunction, sender: str) -> TxReceipt:
    receipt = send(w3, fn, sender)
    assert receipt["status"] == 1
    return receipt


def reverted(w3: Web3, fn: ContractFunction, sender: str) -> TxReceipt:
    """Mine ``fn`` anyway (explicit gas): it must fail and log nothing."""
    receipt = send(w3, fn, sender)
    assert receipt["status"] == 0
    assert receipt["logs"] == []
    return receipt


def latest_time(w3: Web3) -> int:
    return int(w3.eth.get_block("latest")["timestamp"])


def next_block_at(w3: Web3, t: int) -> None:
    """The next mined block (the next transaction's, with automine) has timestamp ``t``."""
    rpc(w3, "evm_setNextBlockTimestamp", t)


def mine_at(w3: Web3, t: int) -> int:
    """Mine an empty block at ``t``; returns its number (calls at it run at time ``t``)."""
    rpc(w3, "evm_mine", t)
    block = w3.eth.get_block("latest")
    assert block["timestamp"] == t
    return int(block["number"])


@dataclass
class Bucket:
    """The documented rate-limit rule (contracts/BridgeToken.sol), in Python."""

    per_cap: int
    cap: int
    secs: int
    tokens: int
    updated: int

    def tokens_now(self, t: int) -> int:
        elapsed = t - self.updated
        if elapsed >= self.secs:
            return self.cap
        return min(self.cap, self.tokens + elapsed * self.cap // self.secs)

    def available(self, t: int) -> int:
        return 0 if self.secs == 0 else self.tokens_now(t)

    def mint(self, t: int, amounts: Sequence[int]) -> tuple[str, tuple[int, int]] | None:
        """The error the batch ``amounts`` at ``t`` must revert with, else None (and apply it)."""
        tokens = self.tokens_now(t)
        for amount in amounts:
            if amount > self.per_cap:
                return "PerTransferCapExceeded", (amount, self.per_cap)
            available = 0 if self.secs == 0 else tokens
            if amount > available:
                return "WindowCapExceeded", (amount, available)
            tokens -= amount
        self.tokens, self.updated = tokens, t
        return None

    def set_caps(self, t: int, per_cap: int, cap: int, secs: int) -> None:
        used = self.cap - self.tokens_now(t)
        self.tokens, self.updated = max(0, cap - used), t
        self.per_cap, self.cap, self.secs = per_cap, cap, secs


# ---------------------------------------------------------------------------------------------
# Fixtures


@dataclass(frozen=True)
class Actors:
    admin: ChecksumAddress
    minter: ChecksumAddress
    pauser: ChecksumAddress
    holder: ChecksumAddress
    outsider: ChecksumAddress


@pytest.fixture(scope="session")
def actors(accounts: list[ChecksumAddress]) -> Actors:
    assert len(accounts) >= 5, "the bridge token tests need 5 unlocked dev accounts"
    return Actors(*accounts[:5])


@pytest.fixture(scope="session")
def deploy_token(deploy: Deploy, actors: Actors) -> Any:
    def _deploy(
        per_cap: int = PER_TRANSFER_CAP,
        cap: int = WINDOW_CAP,
        secs: int = WINDOW_SECONDS,
        decimals: int = 6,
    ) -> Contract:
        return deploy(
            "BridgeToken", "Value USD", "vUSD", decimals, actors.admin, per_cap, cap, secs
        )

    return _deploy


@pytest.fixture(scope="session")
def token(w3: Web3, deploy_token: Any, actors: Actors) -> Contract:
    """BridgeToken deployed once per session; the admin granted MINTER and PAUSER."""
    contract: Contract = deploy_token()
    fns = contract.functions
    ok(w3, fns.grantRole(fns.MINTER_ROLE().call(), actors.minter), actors.admin)
    ok(w3, fns.grantRole(fns.PAUSER_ROLE().call(), actors.pauser), actors.admin)
    return contract


@pytest.fixture
def minted_to_holder(w3: Web3, token: Contract, actors: Actors) -> int:
    ok(w3, token.functions.mint(actors.holder, 700, bid(0)), actors.minter)
    return 700


# ---------------------------------------------------------------------------------------------
# Deployment and roles


def test_deployment_grants_only_the_admin_role(w3: Web3, deploy_token: Any, actors: Actors) -> None:
    token = deploy_token(decimals=18)
    fns = token.functions
    assert (fns.name().call(), fns.symbol().call(), fns.decimals().call()) == (
        "Value USD",
        "vUSD",
        18,
    )
    assert fns.MINTER_ROLE().call() == keccak(text="MINTER_ROLE")
    assert fns.PAUSER_ROLE().call() == keccak(text="PAUSER_ROLE")
    admin_role = fns.DEFAULT_ADMIN_ROLE().call()
    assert fns.hasRole(admin_role, actors.admin).call()
    for role in (fns.MINTER_ROLE().call(), fns.PAUSER_ROLE().call()):
        for who in (actors.admin, actors.minter, actors.pauser):
            assert not fns.hasRole(role, who).call()
    assert fns.perTransferCap().call() == PER_TRANSFER_CAP
    assert fns.windowCap().call() == WINDOW_CAP
    assert fns.windowSeconds().call() == WINDOW_SECONDS
    assert fns.windowAvailable().call() == WINDOW_CAP  # the bucket starts full
    assert fns.totalSupply().call() == 0
    assert not fns.paused().call()

    # Defaults refuse: the admin itself can neither mint nor pause until it grants the roles.
    minter_role, pauser_role = fns.MINTER_ROLE().call(), fns.PAUSER_ROLE().call()
    unauthorized = "AccessControlUnauthorizedAccount"
    assert_reverts(
        token,
        fns.mint(actors.holder, 1, bid(1)),
        actors.admin,
        unauthorized,
        (actors.admin.lower(), minter_role),
    )
    assert_reverts(
        token, fns.pause(), actors.admin, unauthorized, (actors.admin.lower(), pauser_role)
    )


@pytest.mark.parametrize("decimals", [0, 6, 18, 255])
def test_decimals_are_the_constructor_argument(deploy_token: Any, decimals: int) -> None:
    assert deploy_token(decimals=decimals).functions.decimals().call() == decimals


def test_constructor_emits_caps_and_rejects_zero_admin(
    w3: Web3, token: Contract, deployer: ChecksumAddress
) -> None:
    art = load_artifact("BridgeToken")
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    with pytest.raises(ContractCustomError) as info:
        factory.constructor("T", "T", 6, ZERO_ADDRESS, 1, 1, 1).transact({"from": deployer})
    assert decode_revert(token, info.value.data) == ("ZeroAddress", ())

    tx = factory.constructor("T", "T", 6, deployer, 5, 50, 7).transact({"from": deployer})
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    (event,) = token.events.CapsChanged().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"perTransferCap": 5, "windowCap": 50, "windowSeconds": 7}


def test_only_minter_mints(w3: Web3, token: Contract, actors: Actors) -> None:
    fns = token.functions
    role = fns.MINTER_ROLE().call()
    for who in (actors.admin, actors.pauser, actors.holder, actors.outsider):
        assert_reverts(
            token,
            fns.mint(actors.holder, 5, bid(1)),
            who,
            "AccessControlUnauthorizedAccount",
            (who.lower(), role),
        )
        assert_reverts(
            token,
            fns.mintBatch([actors.holder], [5], [bid(1)]),
            who,
            "AccessControlUnauthorizedAccount",
            (who.lower(), role),
        )
    receipt = ok(w3, fns.mint(actors.holder, 5, bid(1)), actors.minter)
    (minted,) = token.events.Minted().process_receipt(receipt, errors=DISCARD)
    assert dict(minted["args"]) == {"bridgeId": bid(1), "to": actors.holder, "amount": 5}
    (transfer,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert dict(transfer["args"]) == {"from": ZERO_ADDRESS, "to": actors.holder, "value": 5}
    assert fns.balanceOf(actors.holder).call() == 5
    assert fns.totalSupply().call() == 5
    assert fns.minted(bid(1)).call()
    assert not fns.minted(bid(2)).call()


def test_admin_grants_and_revokes_minter_and_pauser(
    w3: Web3, token: Contract, actors: Actors
) -> None:
    fns = token.functions
    admin_role = fns.DEFAULT_ADMIN_ROLE().call()
    newcomer = actors.outsider
    for role, use in (
        (fns.MINTER_ROLE().call(), lambda: fns.mint(actors.holder, 1, bid(9))),
        (fns.PAUSER_ROLE().call(), fns.pause),
    ):
        # Neither the minter, the pauser nor the newcomer can grant; only the admin.
        for who in (actors.minter, actors.pauser, newcomer):
            assert_reverts(
                token,
                fns.grantRole(role, newcomer),
                who,
                "AccessControlUnauthorizedAccount",
                (who.lower(), admin_role),
            )
        ok(w3, fns.grantRole(role, newcomer), actors.admin)
        use().call({"from": newcomer})  # allowed now (does not raise)
        ok(w3, fns.revokeRole(role, newcomer), actors.admin)
        assert not fns.hasRole(role, newcomer).call()
        assert_reverts(
            token, use(), newcomer, "AccessControlUnauthorizedAccount", (newcomer.lower(), role)
        )


def test_only_pauser_pauses_and_unpauses(w3: Web3, token: Contract, actors: Actors) -> None:
    fns = token.functions
    role = fns.PAUSER_ROLE().call()
    for fn in (fns.pause(), fns.unpause()):
        for who in (actors.admin, actors.minter, actors.outsider):
            assert_reverts(token, fn, who, "AccessControlUnauthorizedAccount", (who.lower(), role))
    assert_reverts(token, fns.unpause(), actors.pauser, "ExpectedPause", ())
    receipt = ok(w3, fns.pause(), actors.pauser)
    (event,) = token.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["account"] == actors.pauser
    assert fns.paused().call()
    assert_reverts(token, fns.pause(), actors.pauser, "EnforcedPause", ())
    ok(w3, fns.unpause(), actors.pauser)
    assert not fns.paused().call()


def test_pause_blocks_mint_batch_and_redeem_until_unpaused(
    w3: Web3, token: Contract, actors: Actors, minted_to_holder: int
) -> None:
    fns = token.functions
    mint = fns.mint(actors.holder, 10, bid(1))
    batch = fns.mintBatch([actors.holder], [10], [bid(2)])
    redeem = fns.redeem(10, ledger_ref(7))
    ok(w3, fns.pause(), actors.pauser)
    assert_reverts(token, mint, actors.minter, "EnforcedPause", ())
    assert_reverts(token, batch, actors.minter, "EnforcedPause", ())
    assert_reverts(token, redeem, actors.holder, "EnforcedPause", ())
    for fn, who in ((mint, actors.minter), (batch, actors.minter), (redeem, actors.holder)):
        reverted(w3, fn, who)
    assert fns.totalSupply().call() == minted_to_holder
    # Pausing stops the bridge, not the token: holders can still transfer.
    ok(w3, fns.transfer(actors.outsider, 1), actors.holder)

    ok(w3, fns.unpause(), actors.pauser)
    ok(w3, mint, actors.minter)
    ok(w3, batch, actors.minter)
    ok(w3, redeem, actors.holder)
    assert fns.totalSupply().call() == minted_to_holder + 10
    assert fns.minted(bid(1)).call()
    assert fns.minted(bid(2)).call()


# ---------------------------------------------------------------------------------------------
# Mint rules


def test_reused_bridge_id_reverts(w3: Web3, token: Contract, actors: Actors) -> None:
    fns = token.functions
    ok(w3, fns.mint(actors.holder, 5, bid(1)), actors.minter)
    # Same id, whatever the recipient or amount; in a batch too, at any position.
    for fn in (
        fns.mint(actors.holder, 5, bid(1)),
        fns.mint(actors.outsider, 9, bid(1)),
        fns.mintBatch([actors.outsider, actors.holder], [1, 1], [bid(2), bid(1)]),
    ):
        assert_reverts(token, fn, actors.minter, "BridgeIdUsed", (bid(1),))
    assert fns.balanceOf(actors.holder).call() == 5
    assert fns.balanceOf(actors.outsider).call() == 0


def test_zero_address_and_zero_amount_revert(token: Contract, actors: Actors) -> None:
    fns = token.functions
    cases = [
        (fns.mint(ZERO_ADDRESS, 5, bid(1)), "ZeroAddress"),
        (fns.mint(actors.holder, 0, bid(1)), "ZeroAmount"),
        (fns.mintBatch([ZERO_ADDRESS], [5], [bid(1)]), "ZeroAddress"),
        (fns.mintBatch([actors.holder], [0], [bid(1)]), "ZeroAmount"),
    ]
    for fn, error in cases:
        assert_reverts(token, fn, actors.minter, error, ())
    assert_reverts(token, fns.redeem(0, ledger_ref(1)), actors.holder, "ZeroAmount", ())


def test_per_transfer_cap(w3: Web3, token: Contract, actors: Actors) -> None:
    fns = token.functions
    over = PER_TRANSFER_CAP + 1
    assert_reverts(
        token,
        fns.mint(actors.holder, over, bid(1)),
        actors.minter,
        "PerTransferCapExceeded",
        (over, PER_TRANSFER_CAP),
    )
    assert_reverts(
        token,
        fns.mintBatch([actors.holder, actors.holder], [1, over], [bid(1), bid(2)]),
        actors.minter,
        "PerTransferCapExceeded",
        (over, PER_TRANSFER_CAP),
    )
    ok(w3, fns.mint(actors.holder, PER_TRANSFER_CAP, bid(1)), actors.minter)
    assert fns.balanceOf(actors.holder).call() == PER_TRANSFER_CAP


@pytest.mark.parametrize(
    ("caps", "error", "args"),
    [
        ((0, 0, 0), "PerTransferCapExceeded", (1, 0)),
        ((0, WINDOW_CAP, WINDOW_SECONDS), "PerTransferCapExceeded", (1, 0)),
        ((PER_TRANSFER_CAP, 0, WINDOW_SECONDS), "WindowCapExceeded", (1, 0)),
        ((PER_TRANSFER_CAP, WINDOW_CAP, 0), "WindowCapExceeded", (1, 0)),
    ],
)
def test_zero_caps_block_every_mint(
    w3: Web3,
    deploy_token: Any,
    actors: Actors,
    caps: tuple[int, int, int],
    error: str,
    args: tuple[int, int],
) -> None:
    token = deploy_token(*caps)
    fns = token.functions
    ok(w3, fns.grantRole(fns.MINTER_ROLE().call(), actors.minter), actors.admin)
    assert_reverts(token, fns.mint(actors.holder, 1, bid(1)), actors.minter, error, args)
    reverted(w3, fns.mint(actors.holder, 1, bid(1)), actors.minter)
    assert not fns.minted(bid(1)).call()
    if caps[0] != 0:
        assert fns.windowAvailable().call() == 0
    # Real caps unblock it: a blocked window counts as full, so the whole cap is available.
    ok(w3, fns.setCaps(PER_TRANSFER_CAP, WINDOW_CAP, WINDOW_SECONDS), actors.admin)
    assert fns.windowAvailable().call() == WINDOW_CAP
    ok(w3, fns.mint(actors.holder, 1, bid(1)), actors.minter)
    # ...and zeroing them blocks again.
    ok(w3, fns.setCaps(*caps), actors.admin)
    assert_reverts(token, fns.mint(actors.holder, 1, bid(2)), actors.minter, error, args)


def test_set_caps_is_admin_only_and_emits(w3: Web3, token: Contract, actors: Actors) -> None:
    fns = token.functions
    admin_role = fns.DEFAULT_ADMIN_ROLE().call()
    for who in (actors.minter, actors.pauser, actors.outsider):
        assert_reverts(
            token,
            fns.setCaps(1, 2, 3),
            who,
            "AccessControlUnauthorizedAccount",
            (who.lower(), admin_role),
        )
    receipt = ok(w3, fns.setCaps(11, 22, 33), actors.admin)
    (event,) = token.events.CapsChanged().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"perTransferCap": 11, "windowCap": 22, "windowSeconds": 33}
    assert (fns.perTransferCap().call(), fns.windowCap().call(), fns.windowSeconds().call()) == (
        11,
        22,
        33,
    )


# ---------------------------------------------------------------------------------------------
# The rate-limit window, with exact timestamps


def _window_token(w3: Web3, token: Contract, actors: Actors, per_cap: int, t0: int) -> Bucket:
    """Caps set at ``t0`` (the bucket starts full: nothing was minted)."""
    next_block_at(w3, t0)
    ok(w3, token.functions.setCaps(per_cap, WINDOW_CAP, WINDOW_SECONDS), actors.admin)
    return Bucket(per_cap, WINDOW_CAP, WINDOW_SECONDS, WINDOW_CAP, t0)


def test_window_cap_at_the_edge_and_after_the_window(
    w3: Web3, token: Contract, actors: Actors
) -> None:
    fns = token.functions
    t0 = latest_time(w3) + 1_000
    _window_token(w3, token, actors, WINDOW_CAP, t0)
    rate = WINDOW_CAP // WINDOW_SECONDS

    # Drain the bucket exactly: all of it at once succeeds.
    next_block_at(w3, t0 + 1)
    ok(w3, fns.mint(actors.holder, WINDOW_CAP, bid(1)), actors.minter)
    assert fns.windowAvailable().call() == 0
    assert_reverts(
        token, fns.mint(actors.holder, 1, bid(2)), actors.minter, "WindowCapExceeded", (1, 0)
    )

    # One second later exactly one second of refill is available: rate, not rate + 1.
    block = mine_at(w3, t0 + 2)
    assert fns.windowAvailable().call(block_identifier=block) == rate
    assert_reverts(
        token,
        fns.mint(actors.holder, rate + 1, bid(2)),
        actors.minter,
        "WindowCapExceeded",
        (rate + 1, rate),
        block=block,
    )
    next_block_at(w3, t0 + 3)  # two seconds since the drain
    reverted(w3, fns.mint(actors.holder, 2 * rate + 1, bid(2)), actors.minter)
    next_block_at(w3, t0 + 4)  # three seconds since the drain: 3 * rate, exactly
    ok(w3, fns.mint(actors.holder, 3 * rate, bid(2)), actors.minter)
    assert fns.windowAvailable().call() == 0

    # One second short of a full window after the last mint: all but one second's refill.
    last = t0 + 4
    block = mine_at(w3, last + WINDOW_SECONDS - 1)
    assert fns.windowAvailable().call(block_identifier=block) == WINDOW_CAP - rate
    assert_reverts(
        token,
        fns.mint(actors.holder, WINDOW_CAP, bid(3)),
        actors.minter,
        "WindowCapExceeded",
        (WINDOW_CAP, WINDOW_CAP - rate),
        block=block,
    )
    # A full window later the whole cap is back, and never more than the cap.
    block = mine_at(w3, last + WINDOW_SECONDS)
    assert fns.windowAvailable().call(block_identifier=block) == WINDOW_CAP
    block = mine_at(w3, last + 50 * WINDOW_SECONDS)
    assert fns.windowAvailable().call(block_identifier=block) == WINDOW_CAP
    next_block_at(w3, last + 50 * WINDOW_SECONDS + 1)
    ok(w3, fns.mint(actors.holder, WINDOW_CAP, bid(3)), actors.minter)
    assert fns.balanceOf(actors.holder).call() == 2 * WINDOW_CAP + 3 * rate


def test_window_refill_rounds_down(w3: Web3, token: Contract, actors: Actors) -> None:
    """1,000 per 3 seconds: one second refills floor(333.3) = 333, never 334."""
    fns = token.functions
    t0 = latest_time(w3) + 1_000
    next_block_at(w3, t0)
    ok(w3, fns.setCaps(1_000, 1_000, 3), actors.admin)
    next_block_at(w3, t0 + 1)
    ok(w3, fns.mint(actors.holder, 1_000, bid(1)), actors.minter)
    block = mine_at(w3, t0 + 2)
    assert fns.windowAvailable().call(block_identifier=block) == 333
    next_block_at(w3, t0 + 3)
    ok(w3, fns.mint(actors.holder, 666, bid(2)), actors.minter)  # 2 s: floor(666.6)
    block = mine_at(w3, t0 + 4)
    assert fns.windowAvailable().call(block_identifier=block) == 333
    block = mine_at(w3, t0 + 6)  # 3 s since the last mint: a whole window
    assert fns.windowAvailable().call(block_identifier=block) == 1_000


def test_window_matches_the_documented_rule(w3: Web3, token: Contract, actors: Actors) -> None:
    """Random mints, batches and cap changes at random times agree with :class:`Bucket`."""
    rng = random.Random(11)
    fns = token.functions
    t = latest_time(w3) + 1_000
    model = _window_token(w3, token, actors, 3_000, t)
    outcomes = {"ok": 0, "reverted": 0}
    for step in range(60):
        t += rng.choice([0, 1, 1, 2, 7, 33, 99, 100, 101, 250]) + 1
        if rng.random() < 0.1:
            per_cap = rng.choice([0, 500, 3_000])
            cap = rng.choice([0, 2_000, WINDOW_CAP, 25_000])
            secs = rng.choice([0, 1, 60, WINDOW_SECONDS, 1_000])
            next_block_at(w3, t)
            ok(w3, fns.setCaps(per_cap, cap, secs), actors.admin)
            model.set_caps(t, per_cap, cap, secs)
            continue
        block = mine_at(w3, t)
        assert fns.windowAvailable().call(block_identifier=block) == model.available(t), step
        t += 1
        n = rng.choice([1, 1, 1, 2, 4])
        amounts = [rng.choice([1, 100, 999, 1_000, 2_500, 3_000]) for _ in range(n)]
        ids = [bid(1_000 * step + i) for i in range(n)]
        fn = fns.mintBatch([actors.holder] * n, amounts, ids)
        if n == 1 and rng.random() < 0.5:
            fn = fns.mint(actors.holder, amounts[0], ids[0])
        expected = model.mint(t, amounts)
        if expected is not None:
            # The error as of time t: a block at t, and the call against it.
            block = mine_at(w3, t)
            assert_reverts(token, fn, actors.minter, *expected, block=block)
            outcomes["reverted"] += 1
        else:
            next_block_at(w3, t)
            ok(w3, fn, actors.minter)
            outcomes["ok"] += 1
    assert fns.totalSupply().call() == fns.balanceOf(actors.holder).call()
    # The walk exercised both outcomes, not just one.
    assert outcomes["ok"] >= 10, outcomes
    assert outcomes["reverted"] >= 10, outcomes


def test_set_caps_keeps_what_was_drained(w3: Web3, token: Contract, actors: Actors) -> None:
    """setCaps carries `used = windowCap - available` over to the new caps."""
    fns = token.functions
    t0 = latest_time(w3) + 1_000
    model = _window_token(w3, token, actors, WINDOW_CAP, t0)
    steps: list[tuple[int, int, int]] = [
        # (time, new windowCap, available right after setCaps)
        (t0 + 2, 5_000, 0),  # used 5,900 (6,000 minted, 1 s refilled) > 5,000: nothing left
        (t0 + 4, 20_000, 15_100),  # 2 s at the new rate 50/s refilled 100: used 4,900
        (t0 + 5, 20_000, 15_300),  # same caps: only the refill (200/s) changes it
    ]
    next_block_at(w3, t0 + 1)
    ok(w3, fns.mint(actors.holder, 6_000, bid(1)), actors.minter)
    assert model.mint(t0 + 1, [6_000]) is None
    for t, cap, expected in steps:
        next_block_at(w3, t)
        receipt = ok(w3, fns.setCaps(WINDOW_CAP, cap, WINDOW_SECONDS), actors.admin)
        model.set_caps(t, WINDOW_CAP, cap, WINDOW_SECONDS)
        at = receipt["blockNumber"]
        assert fns.windowAvailable().call(block_identifier=at) == expected == model.available(t)


# ---------------------------------------------------------------------------------------------
# Redeem


def test_redeem_burns_and_emits_the_exact_fields(
    w3: Web3, token: Contract, actors: Actors, minted_to_holder: int
) -> None:
    fns = token.functions
    account_id = 0x0102030405060708
    receipt = ok(w3, fns.redeem(200, ledger_ref(account_id)), actors.holder)
    assert fns.balanceOf(actors.holder).call() == minted_to_holder - 200
    assert fns.totalSupply().call() == minted_to_holder - 200

    # Decode the raw log by hand: Redeemed(address indexed from, uint256 amount,
    # bytes32 indexed ledgerRef).
    topic0 = keccak(text="Redeemed(address,uint256,bytes32)")
    (log,) = [x for x in receipt["logs"] if bytes(x["topics"][0]) == topic0]
    assert log["address"] == token.address
    assert [bytes(x) for x in log["topics"]] == [
        topic0,
        bytes(12) + bytes.fromhex(actors.holder[2:]),
        bytes(24) + account_id.to_bytes(8, "big"),
    ]
    assert bytes(log["data"]) == encode(["uint256"], [200])
    (transfer,) = token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert dict(transfer["args"]) == {"from": actors.holder, "to": ZERO_ADDRESS, "value": 200}

    # Only the caller's own tokens, and no more than it holds.
    left = minted_to_holder - 200
    assert_reverts(
        token,
        fns.redeem(left + 1, ledger_ref(1)),
        actors.holder,
        "ERC20InsufficientBalance",
        (actors.holder.lower(), left, left + 1),
    )
    assert_reverts(
        token,
        fns.redeem(1, ledger_ref(1)),
        actors.outsider,
        "ERC20InsufficientBalance",
        (actors.outsider.lower(), 0, 1),
    )


# ---------------------------------------------------------------------------------------------
# Batches


def test_batch_mints_every_item_with_one_event_each(
    w3: Web3, token: Contract, actors: Actors
) -> None:
    fns = token.functions
    to = [actors.holder, actors.outsider, actors.holder]
    amounts = [10, 20, 30]
    ids = [bid(1), bid(2), bid(3)]
    receipt = ok(w3, fns.mintBatch(to, amounts, ids), actors.minter)
    events = token.events.Minted().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in events] == [
        {"bridgeId": i, "to": a, "amount": n} for a, n, i in zip(to, amounts, ids, strict=True)
    ]
    assert len(token.events.Transfer().process_receipt(receipt, errors=DISCARD)) == 3
    assert all(fns.minted(i).call() for i in ids)
    assert fns.balanceOf(actors.holder).call() == 40
    assert fns.balanceOf(actors.outsider).call() == 20
    assert fns.windowAvailable().call() <= WINDOW_CAP  # the batch drew on the window
    # An empty batch mints nothing and succeeds.
    receipt = ok(w3, fns.mintBatch([], [], []), actors.minter)
    assert token.events.Minted().process_receipt(receipt, errors=DISCARD) == ()


@pytest.mark.parametrize(
    ("position", "bad", "error"),
    [
        (0, (ZERO_ADDRESS, 5, None), ("ZeroAddress", ())),
        (2, (None, 0, None), ("ZeroAmount", ())),
        (1, (None, PER_TRANSFER_CAP + 1, None), ("PerTransferCapExceeded", (1_001, 1_000))),
        (2, (None, 5, "dup"), ("BridgeIdUsed", (bid(100),))),
        (1, (None, 5, "used"), ("BridgeIdUsed", (bid(50),))),
    ],
)
def test_batch_is_all_or_nothing(
    w3: Web3,
    token: Contract,
    actors: Actors,
    position: int,
    bad: tuple[str | None, int, str | None],
    error: tuple[str, tuple[Any, ...]],
) -> None:
    fns = token.functions
    ok(w3, fns.mint(actors.outsider, 1, bid(50)), actors.minter)
    to = [actors.holder] * 3
    amounts = [5, 5, 5]
    ids = [bid(100), bid(101), bid(102)]
    address, amount, id_kind = bad
    if address is not None:
        to[position] = address
    amounts[position] = amount
    if id_kind == "dup":
        ids[position] = ids[0]
    elif id_kind == "used":
        ids[position] = bid(50)
    fn = fns.mintBatch(to, amounts, ids)
    assert_reverts(token, fn, actors.minter, *error)
    supply, available = fns.totalSupply().call(), fns.windowAvailable().call()
    reverted(w3, fn, actors.minter)  # mined: status 0, no events
    assert fns.balanceOf(actors.holder).call() == 0
    assert fns.totalSupply().call() == supply
    assert not any(fns.minted(i).call() for i in (bid(100), bid(101), bid(102)))
    assert fns.windowAvailable().call() >= available


def test_batch_items_share_the_window(w3: Web3, token: Contract, actors: Actors) -> None:
    """Item i sees what items < i left: the item that crosses the cap fails the whole batch."""
    fns = token.functions
    t0 = latest_time(w3) + 1_000
    _window_token(w3, token, actors, PER_TRANSFER_CAP, t0)
    n = WINDOW_CAP // PER_TRANSFER_CAP
    block = mine_at(w3, t0 + 1)
    fn = fns.mintBatch(
        [actors.holder] * (n + 1), [PER_TRANSFER_CAP] * (n + 1), [bid(i) for i in range(n + 1)]
    )
    assert_reverts(
        token, fn, actors.minter, "WindowCapExceeded", (PER_TRANSFER_CAP, 0), block=block
    )
    next_block_at(w3, t0 + 2)
    ok(
        w3,
        fns.mintBatch([actors.holder] * n, [PER_TRANSFER_CAP] * n, [bid(i) for i in range(n)]),
        actors.minter,
    )
    assert fns.balanceOf(actors.holder).call() == WINDOW_CAP


@pytest.mark.parametrize("lengths", [(2, 1, 1), (1, 2, 1), (1, 1, 2), (0, 1, 1), (1, 1, 0)])
def test_batch_length_mismatch_reverts(
    token: Contract, actors: Actors, lengths: tuple[int, int, int]
) -> None:
    n_to, n_amounts, n_ids = lengths
    fn = token.functions.mintBatch(
        [actors.holder] * n_to, [5] * n_amounts, [bid(i) for i in range(n_ids)]
    )
    assert_reverts(token, fn, actors.minter, "LengthMismatch", ())


# ---------------------------------------------------------------------------------------------
# Permit (EIP-2612)


def _permit_signature(
    w3: Web3, token: Contract, key: str, spender: str, value: int, nonce: int, deadline: int
) -> tuple[int, bytes, bytes]:
    owner = Account.from_key(key).address
    signed = Account.sign_typed_data(
        key,
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Permit": [
                    {"name": "owner", "type": "address"},
                    {"name": "spender", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Permit",
            "domain": {
                "name": token.functions.name().call(),
                "version": "1",
                "chainId": w3.eth.chain_id,
                "verifyingContract": token.address,
            },
            "message": {
                "owner": owner,
                "spender": spender,
                "value": value,
                "nonce": nonce,
                "deadline": deadline,
            },
        },
    )
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")


def test_permit_signed_with_a_dev_key_lets_the_spender_pull(
    w3: Web3, token: Contract, actors: Actors, accounts: list[ChecksumAddress], dev_keys: list[str]
) -> None:
    fns = token.functions
    key = dev_keys[accounts.index(actors.holder)]
    assert Account.from_key(key).address == actors.holder
    ok(w3, fns.mint(actors.holder, 500, bid(1)), actors.minter)
    spender = actors.outsider
    deadline = latest_time(w3) + 3_600
    v, r, s = _permit_signature(w3, token, key, spender, 300, 0, deadline)

    # Anyone may submit the permit; here the spender pays the gas.
    ok(w3, fns.permit(actors.holder, spender, 300, deadline, v, r, s), spender)
    assert fns.allowance(actors.holder, spender).call() == 300
    assert fns.nonces(actors.holder).call() == 1
    ok(w3, fns.transferFrom(actors.holder, spender, 300), spender)
    assert fns.balanceOf(spender).call() == 300
    assert fns.balanceOf(actors.holder).call() == 200

    # A replay no longer matches the nonce: the signature recovers to someone else.
    replay = fns.permit(actors.holder, spender, 300, deadline, v, r, s)
    with pytest.raises(ContractCustomError) as info:
        replay.call({"from": spender})
    name, _ = decode_revert(token, info.value.data)
    assert name == "ERC2612InvalidSigner"
    # An expired one is refused as such.
    past = latest_time(w3) - 1
    v, r, s = _permit_signature(w3, token, key, spender, 1, 1, past)
    assert_reverts(
        token,
        fns.permit(actors.holder, spender, 1, past, v, r, s),
        spender,
        "ERC2612ExpiredSignature",
        (past,),
    )


# ---------------------------------------------------------------------------------------------
# The ledger side's hand-made calldata


def test_hand_encoded_mint_calldata_matches_the_abi_and_mints(
    w3: Web3, token: Contract, actors: Actors
) -> None:
    """What the ledger side encodes by hand (core.bridges.erc20.mint_calldata) is the
    contract's own mint call, and a MINTER sending it mints."""
    selector = keccak256(b"mint(address,uint256,bytes32)")[:4]
    assert (
        selector
        == bytes(
            HexBytes(token.functions.mint(actors.holder, 1, bid(1))._encode_transaction_data())
        )[:4]
    )
    (mint_abi,) = [e for e in token.abi if e.get("type") == "function" and e["name"] == "mint"]
    assert [i["type"] for i in mint_abi["inputs"]] == ["address", "uint256", "bytes32"]

    data = mint_calldata(actors.holder, 42, bid(7))
    assert data[:4] == selector
    assert data == bytes(
        HexBytes(token.functions.mint(actors.holder, 42, bid(7))._encode_transaction_data())
    )
    tx = w3.eth.send_transaction(
        {"from": actors.minter, "to": token.address, "data": HexBytes(data)}
    )
    receipt = w3.eth.wait_for_transaction_receipt(tx)
    assert receipt["status"] == 1
    (event,) = token.events.Minted().process_receipt(receipt, errors=DISCARD)
    assert dict(event["args"]) == {"bridgeId": bid(7), "to": actors.holder, "amount": 42}
    assert token.functions.minted(bid(7)).call()
    # The same bytes from a non-minter revert.
    tx = w3.eth.send_transaction(
        {"from": actors.outsider, "to": token.address, "data": HexBytes(data), "gas": 200_000}
    )
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 0


# ---------------------------------------------------------------------------------------------
# The Python binding (chain.evm.bridge_token)


async def test_binding_deploys_grants_and_reads(
    anvil: str, w3: Web3, actors: Actors, accounts: list[ChecksumAddress], dev_keys: list[str]
) -> None:
    admin = Account.from_key(dev_keys[0])
    assert admin.address == accounts[0]
    aw3 = await_automine(connect(anvil))
    try:
        address = await deploy_bridge_token(
            aw3,
            admin,
            name="Value EUR",
            symbol="vEUR",
            decimals=2,
            admin=admin.address,
            minter=actors.minter,
            pauser=actors.pauser,
            per_transfer_cap=PER_TRANSFER_CAP,
            window_cap=WINDOW_CAP,
            window_seconds=WINDOW_SECONDS,
        )
        token = w3.eth.contract(address=address, abi=load_artifact("BridgeToken").abi)
        fns = token.functions
        minter_role, pauser_role = fns.MINTER_ROLE().call(), fns.PAUSER_ROLE().call()
        assert fns.hasRole(minter_role, actors.minter).call()
        assert fns.hasRole(pauser_role, actors.pauser).call()
        assert not fns.hasRole(minter_role, admin.address).call()
        assert not fns.hasRole(pauser_role, admin.address).call()
        assert fns.hasRole(fns.DEFAULT_ADMIN_ROLE().call(), admin.address).call()

        client = BridgeTokenClient(aw3, address, admin)
        assert client.role == "bridge"
        assert "BridgeTokenClient(" in repr(client)
        assert dev_keys[0][2:] not in repr(client)
        assert await client.decimals() == 2
        assert not await client.paused()
        assert await client.total_supply() == 0
        assert not await client.is_minted(bid(1))

        # A mintBatch encoded by the binding, sent by the minter.
        items = [(actors.holder, 300, bid(1)), (actors.outsider.lower(), 200, bid(2))]
        data = mint_batch_calldata(items)
        assert data == bytes(
            HexBytes(
                fns.mintBatch(
                    [actors.holder, actors.outsider], [300, 200], [bid(1), bid(2)]
                )._encode_transaction_data()
            )
        )
        tx = w3.eth.send_transaction({"from": actors.minter, "to": address, "data": HexBytes(data)})
        minted_at = w3.eth.wait_for_transaction_receipt(tx)["blockNumber"]
        assert await client.is_minted(bid(1))
        assert await client.is_minted(bid(2))
        assert await client.total_supply() == 500
        assert await client.total_supply(minted_at - 1) == 0

        first = ok(w3, fns.redeem(120, ledger_ref(42)), actors.holder)
        second = ok(w3, fns.redeem(80, ledger_ref(2**64 - 1)), actors.outsider)
        found = await client.redemptions(first["blockNumber"], second["blockNumber"])
        assert found == [
            Redemption(
                tx_hash=bytes(r["transactionHash"]),
                log_index=r["logs"][-1]["logIndex"],
                block_number=r["blockNumber"],
                block_hash=bytes(r["blockHash"]),
                sender=who,
                amount=amount,
                ledger_ref=ref,
            )
            for r, who, amount, ref in (
                (first, actors.holder, 120, ledger_ref(42)),
                (second, actors.outsider, 80, ledger_ref(2**64 - 1)),
            )
        ]
        assert await client.redemptions(second["blockNumber"], second["blockNumber"]) == found[1:]
        assert await client.redemptions(0, minted_at) == []
        assert await client.total_supply() == 300

        ok(w3, fns.pause(), actors.pauser)
        assert await client.paused()
    finally:
        await aw3.provider.disconnect()


async def test_binding_refuses_a_signer_that_is_not_the_admin(
    anvil: str, w3: Web3, actors: Actors, dev_keys: list[str]
) -> None:
    signer = Account.from_key(dev_keys[1])
    aw3 = connect(anvil)
    nonce = w3.eth.get_transaction_count(signer.address)
    try:
        with pytest.raises(ChainError, match="must be the admin"):
            await deploy_bridge_token(
                aw3,
                signer,
                name="T",
                symbol="T",
                decimals=6,
                admin=actors.admin,
                minter=actors.minter,
                pauser=actors.pauser,
                per_transfer_cap=1,
                window_cap=1,
                window_seconds=1,
            )
    finally:
        await aw3.provider.disconnect()
    assert w3.eth.get_transaction_count(signer.address) == nonce  # nothing was sent


async def test_binding_wraps_rpc_failures(dev_keys: list[str]) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused (no retries:
    # web3's provider would otherwise back off for ~2 s per call before giving up).
    aw3 = AsyncWeb3(
        AsyncWeb3.AsyncHTTPProvider("http://127.0.0.1:9", exception_retry_configuration=None)
    )
    client = BridgeTokenClient(aw3, "0x" + "11" * 20, Account.from_key(dev_keys[0]))
    try:
        for call in (
            client.is_minted(bid(1)),
            client.total_supply(),
            client.decimals(),
            client.paused(),
            client.redemptions(0, 10),
        ):
            with pytest.raises(ChainError):
                await call
    finally:
        await aw3.provider.disconnect()


# ---------------------------------------------------------------------------------------------
# Gas


def test_gas_per_mint_and_per_batch_item(
    w3: Web3, deploy_token: Any, actors: Actors, record_property: Any
) -> None:
    """gasUsed of a single mint and per item of mintBatch (1/10/50), each item a fresh bridge id
    and a fresh recipient (the usual bridge-out), after a warm-up mint (supply and window slots
    non-zero, as in steady state). Printed with -s and recorded as properties; asserted only
    loosely."""
    token = deploy_token(10**30, 10**30, 86_400, 18)
    fns = token.functions
    ok(w3, fns.grantRole(fns.MINTER_ROLE().call(), actors.minter), actors.admin)
    ok(w3, fns.mint(actors.holder, 10**18, bid(0)), actors.minter)
    counter = iter(range(1, 10**6))

    def fresh() -> tuple[str, bytes]:
        n = next(counter)
        return Web3.to_checksum_address(keccak(text=f"recipient-{n}")[:20]), bid(n)

    to, bridge_id = fresh()
    single_fresh = ok(w3, fns.mint(to, 10**18, bridge_id), actors.minter)["gasUsed"]
    _, bridge_id = fresh()
    single_holder = ok(w3, fns.mint(actors.holder, 10**18, bridge_id), actors.minter)["gasUsed"]
    per_item = {}
    for n in (1, 10, 50):
        recipients, ids = zip(*(fresh() for _ in range(n)), strict=True)
        receipt = ok(w3, fns.mintBatch(list(recipients), [10**18] * n, list(ids)), actors.minter)
        per_item[n] = receipt["gasUsed"] / n
    print()
    print(f"mint, fresh recipient: gasUsed={single_fresh}")
    print(f"mint, existing holder: gasUsed={single_holder}")
    for n, gas in per_item.items():
        print(f"mintBatch of {n}: {gas:,.0f} gas per item (total {gas * n:,.0f})")
    record_property("gas_mint_fresh_recipient", single_fresh)
    record_property("gas_mint_existing_holder", single_holder)
    for n, gas in per_item.items():
        record_property(f"gas_mint_batch_{n}_per_item", round(gas))
    # Loose sanity: a batch amortises the transaction and the cap reads, so per item it is
    # cheaper than a single mint, and more so the bigger the batch.
    assert single_fresh < 150_000
    assert per_item[50] < per_item[10] < per_item[1]
    assert per_item[10] < single_fresh
