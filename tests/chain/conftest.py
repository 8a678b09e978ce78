"""Fixtures for tests against a real anvil node.

One anvil per test session (started by chain.evm.anvil on a free port, or the node at
``$ANVIL_RPC_URL``), isolated per test with ``evm_snapshot`` / ``evm_revert``: every test starts
from the state the session fixtures built (e.g. the deployed LedgerAnchor) and its own
transactions are rolled back afterwards, without restarting the node.

Fixtures meant for reuse (bridge tests too): ``anvil`` (RPC URL), ``w3``, ``accounts``,
``deployer``, ``dev_keys``, ``deploy(artifact_name, *args, sender=...)``, ``ledger_id``,
``ledger_anchor``.

anvil's automine mines a transaction *after* ``eth_sendRawTransaction`` / ``eth_sendTransaction``
has answered (a separate task in the node): right after a send the receipt is often missing,
and under CPU load for tens of milliseconds. The tests read "automine" as "sent means mined"
(e.g. one ``run_once`` takes an anchor to CONFIRMED), so every connection the tests open goes
through :class:`AwaitAutomine`: while automine is on, a send that the node accepted returns once
the node has mined the transaction. Tests with automine off (``manual_mining``) are untouched.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import keccak
from web3 import AsyncWeb3, Web3
from web3.contract import Contract
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from chain.evm.anvil import AnvilError, AnvilNode, find_anvil, start_anvil, wait_for_rpc
from chain.evm.artifacts import load_artifact
from chain.evm.bridge_token import deploy_bridge_token
from chain.evm.client import connect
from core.ledger import Ledger
from tests.conftest import settings_for
from tests.support import create_database, drop_database

# anvil's well-known public test keys (mnemonic "test test ... junk"); used only when the node is
# an external one ($ANVIL_RPC_URL) whose own --config-out output we cannot read. Not secrets.
WELL_KNOWN_ANVIL_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a8928f6b3cd8",
)

LEDGER_ID = keccak(text="valueos:test-ledger")

Deploy = Callable[..., Contract]

_SENDS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})
#: a transaction the node accepted while automine is on is mined well within this
_MINED_WITHIN_S = 30.0


class AwaitAutomine(Web3Middleware):
    """While anvil automines, a successful send returns only once the transaction is mined.

    anvil answers the send first and mines in its own task a little later; without this a test
    can observe the gap (the job still sees its transaction pending) when the machine is busy.
    Waiting for the receipt is a condition, not a delay; a transaction that never gets mined
    fails the test with web3's ``TimeExhausted`` instead of hanging.
    """

    def response_processor(self, method: RPCEndpoint, response: RPCResponse) -> RPCResponse:
        w3 = self._w3
        if method in _SENDS and response.get("result") and isinstance(w3, Web3):
            automine = w3.provider.make_request(RPCEndpoint("anvil_getAutomine"), [])
            if automine.get("result") is True:
                w3.eth.wait_for_transaction_receipt(
                    response["result"], timeout=_MINED_WITHIN_S, poll_latency=0.01
                )
        return response

    async def async_response_processor(
        self, method: RPCEndpoint, response: RPCResponse
    ) -> RPCResponse:
        w3 = self._w3
        if method in _SENDS and response.get("result") and isinstance(w3, AsyncWeb3):
            automine = await w3.provider.make_request(RPCEndpoint("anvil_getAutomine"), [])
            if automine.get("result") is True:
                await w3.eth.wait_for_transaction_receipt(
                    response["result"], timeout=_MINED_WITHIN_S, poll_latency=0.01
                )
        return response


def await_automine(w3: AsyncWeb3[Any]) -> AsyncWeb3[Any]:
    """``w3`` (a connection the code under test uses) with :class:`AwaitAutomine` added."""
    w3.middleware_onion.add(AwaitAutomine)
    return w3


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[AnvilNode | None]:
    """The anvil process this session started, or None when using $ANVIL_RPC_URL."""
    if os.environ.get("ANVIL_RPC_URL"):
        yield None
        return
    if find_anvil() is None:
        # a failure, not a skip: `make test` installs anvil, so its absence is a broken setup
        # (a skip would let every chain test vanish from a green run)
        pytest.fail("anvil not found: run `npm install` (@foundry-rs/anvil) or set ANVIL_RPC_URL")
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def anvil(anvil_node: AnvilNode | None) -> str:
    """JSON-RPC URL of the session's anvil node."""
    if anvil_node is not None:
        return anvil_node.rpc_url
    url = os.environ["ANVIL_RPC_URL"]
    try:
        wait_for_rpc(url, timeout=10.0)
    except AnvilError as exc:
        pytest.fail(f"ANVIL_RPC_URL={url} does not answer: {exc}")
    return url


@pytest.fixture(scope="session")
def w3(anvil: str) -> Web3:
    web3 = Web3(Web3.HTTPProvider(anvil, request_kwargs={"timeout": 30}))
    web3.middleware_onion.add(AwaitAutomine)
    assert web3.is_connected(), f"no connection to {anvil}"
    return web3


@pytest.fixture(scope="session")
def accounts(w3: Web3) -> list[ChecksumAddress]:
    """anvil's unlocked dev accounts (the node signs eth_sendTransaction for them)."""
    found = list(w3.eth.accounts)
    assert len(found) >= 3, "the chain tests need at least 3 unlocked dev accounts"
    return found


@pytest.fixture(scope="session")
def deployer(accounts: list[ChecksumAddress]) -> ChecksumAddress:
    return accounts[0]


@pytest.fixture(scope="session")
def dev_keys(anvil_node: AnvilNode | None) -> list[str]:
    """Private keys of the dev accounts, from anvil's own --config-out (for local signing)."""
    if anvil_node is None:
        return list(WELL_KNOWN_ANVIL_KEYS)
    return [str(k) for k in anvil_node.config()["private_keys"]]


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """A raw JSON-RPC call (anvil's own methods too); an error answer fails the test."""
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise AssertionError(f"{method} failed: {response['error']}")
    return response["result"]


@pytest.fixture(autouse=True)
def _isolation(w3: Web3) -> Iterator[None]:
    """Snapshot the chain before each test and revert to it afterwards.

    Session-scoped fixtures are set up before function-scoped ones, so whatever they deploy is
    part of the snapshot and survives the revert.
    """
    snapshot = rpc(w3, "evm_snapshot")
    try:
        yield
    finally:
        revert_to(w3, snapshot)


def revert_to(w3: Web3, snapshot: str) -> None:
    """Back to ``snapshot``, with an empty mempool: anvil's ``evm_revert`` keeps the pending
    transactions, which the next test would then find mined in its own chain."""
    rpc(w3, "anvil_dropAllTransactions")
    assert rpc(w3, "evm_revert", snapshot) is True, "evm_revert failed"


@pytest.fixture(scope="session")
def deploy(w3: Web3, deployer: ChecksumAddress) -> Deploy:
    """``deploy("LedgerAnchor", ledger_id, admin, 0, bytes(32), sender=...)`` -> Contract, from the artifact."""

    def _deploy(name: str, *args: Any, sender: ChecksumAddress | None = None) -> Contract:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx_hash = factory.constructor(*args).transact({"from": sender or deployer})
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, f"deploying {name} reverted"
        address = receipt["contractAddress"]
        assert address is not None
        return w3.eth.contract(address=address, abi=artifact.abi)

    return _deploy


@pytest.fixture(scope="session")
def ledger_id() -> bytes:
    return LEDGER_ID


@pytest.fixture(scope="session")
def ledger_anchor(deploy: Deploy, deployer: ChecksumAddress, ledger_id: bytes) -> Contract:
    """LedgerAnchor deployed once per session; the deployer is admin and anchorer."""
    return deploy("LedgerAnchor", ledger_id, deployer, 0, bytes(32))


@pytest.fixture
async def db_url() -> AsyncIterator[str]:
    """A database of its own per chain test: anvil's state is reverted after each test, so the
    rows that describe it (anchors, outbox rows and the nonces they hold) must go with it."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def ledger(db_url: str) -> AsyncIterator[Ledger]:
    """The ledger on the test's own database (overrides the session-wide one of tests/)."""
    led = Ledger.connect(settings_for(db_url))
    try:
        yield led
    finally:
        await led.close()


@pytest.fixture
def admin(dev_keys: list[str]) -> LocalAccount:
    """The bridge token's admin and pauser (anvil's first dev account)."""
    account: LocalAccount = Account.from_key(dev_keys[0])
    return account


@pytest.fixture
def minter(dev_keys: list[str]) -> LocalAccount:
    """The bridge token's minter (anvil's second dev account)."""
    account: LocalAccount = Account.from_key(dev_keys[1])
    return account


@pytest.fixture
async def token(anvil: str, admin: LocalAccount, minter: LocalAccount) -> AsyncIterator[str]:
    """A BridgeToken (6 decimals, roomy caps) deployed for the test; its address."""
    w3 = connect(anvil)
    try:
        yield await deploy_bridge_token(
            w3, admin, name="Bridged", symbol="BRG", decimals=6, admin=admin.address,
            minter=minter.address, pauser=admin.address, per_transfer_cap=10**15,
            window_cap=10**16, window_seconds=3600,
        )  # fmt: skip
    finally:
        await w3.provider.disconnect()
