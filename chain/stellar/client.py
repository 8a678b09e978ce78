"""The bridge's Soroban RPC client: Stellar Asset Contract calls, envelopes, statuses, events.

Everything goes through the unmodified ``stellar_sdk.SorobanServerAsync``. A mint is
``mint(to, amount)`` on the asset's SAC, in a transaction whose source is a channel account
(its sequence number, its fee) and whose authorization entry is signed by the SAC's admin
(the asset's issuer): :meth:`StellarClient.build_mint` simulates it (footprint, resource fee),
signs it and returns the envelope to persist before it is ever sent.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from stellar_sdk import (
    Account,
    Address,
    Asset,
    Keypair,
    TransactionBuilder,
    scval,
)
from stellar_sdk import xdr as x
from stellar_sdk.auth import authorize_entry
from stellar_sdk.exceptions import PrepareTransactionException, SdkError
from stellar_sdk.soroban_rpc import EventFilter, EventFilterType, EventInfo
from stellar_sdk.soroban_server_async import SorobanServerAsync

from chain.stellar.http import HttpxClient
from core.bridges.stellar import StellarToken

__all__ = [
    "BASE_FEE",
    "BurnEvent",
    "CallRefused",
    "Destinations",
    "Envelope",
    "Seen",
    "SendStatus",
    "Sent",
    "StellarClient",
    "StellarRpcError",
    "Trustline",
    "burn_topic",
]

#: inclusion fee per operation (stroops); the resource fee comes from the simulation
BASE_FEE = 100
#: ledgers an admin authorization stays valid past the transaction's own time bounds
AUTH_LEDGER_MARGIN = 20
AUTHORIZED_FLAG = 1


class StellarRpcError(Exception):
    """The RPC did not answer, or answered with an error."""


class CallRefused(Exception):
    """The simulation says the call fails (e.g. the destination's trustline is missing):
    nothing was signed."""


class SendStatus(StrEnum):
    PENDING = "PENDING"
    DUPLICATE = "DUPLICATE"
    TRY_AGAIN_LATER = "TRY_AGAIN_LATER"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Envelope:
    xdr: str
    hash: bytes
    source: str
    seq: int
    max_time: int


@dataclass(frozen=True, slots=True)
class Sent:
    status: SendStatus
    #: the decoded result code of an ERROR (``txBAD_SEQ``...)
    error: str | None
    latest_ledger: int


@dataclass(frozen=True, slots=True)
class Seen:
    """getTransaction: SUCCESS or FAILED with its ledger, or NOT_FOUND; and the latest
    closed ledger with its close time (the clock a transaction's maxTime is judged by)."""

    status: str
    ledger: int | None
    result_code: str | None
    latest_ledger: int
    latest_close_time: int
    #: the close time of the oldest ledger the RPC still keeps (its history starts there)
    oldest_close_time: int


@dataclass(frozen=True, slots=True)
class Trustline:
    balance: int
    limit: int
    authorized: bool


@dataclass(frozen=True, slots=True)
class BurnEvent:
    """A CAP-67 ``burn`` (or ``mint``) event of a SAC, as read from ``getEvents``."""

    id: str
    kind: str
    contract: str
    ledger: int
    tx_hash: bytes
    op_index: int
    event_index: int
    address: str
    asset: str
    amount: int


def burn_topic(kind: str = "burn") -> str:
    return str(scval.to_symbol(kind).to_xdr())


def _rpc(exc: Exception) -> StellarRpcError:
    return StellarRpcError(f"{type(exc).__name__}: {exc}")


class StellarClient:
    def __init__(self, url: str, passphrase: str) -> None:
        self.url = url
        self.passphrase = passphrase
        self.server = SorobanServerAsync(url, HttpxClient())

    async def close(self) -> None:
        await self.server.close()

    async def check_network(self) -> None:
        """Refuse to work against an RPC of another network."""
        try:
            found = (await self.server.get_network()).passphrase
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        if found != self.passphrase:
            raise StellarRpcError(f"the RPC serves {found!r}, not {self.passphrase!r}")

    async def latest(self) -> tuple[int, int]:
        """(sequence, close time) of the latest closed ledger."""
        try:
            got = await self.server.get_latest_ledger()
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        return got.sequence, got.close_time

    async def retention(self) -> tuple[int, int]:
        """(oldest ledger the RPC still serves, latest ledger)."""
        try:
            got = await self.server.get_health()
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        return got.oldest_ledger, got.latest_ledger

    async def ledger_hash(self, seq: int) -> bytes | None:
        """Ledger ``seq``'s hash; None when the RPC does not have it (not closed yet, or out of
        its retention window)."""
        try:
            got = await self.server.get_ledgers(start_ledger=seq, limit=1)
        except (SdkError, OSError):
            return None
        for ledger in got.ledgers:
            if ledger.sequence == seq:
                return bytes.fromhex(ledger.hash)
        return None

    async def account_seq(self, account: str) -> int | None:
        """The account's current sequence number; None when it does not exist."""
        key = x.LedgerKey(
            x.LedgerEntryType.ACCOUNT,
            account=x.LedgerKeyAccount(Keypair.from_public_key(account).xdr_account_id()),
        )
        try:
            got = await self.server.get_ledger_entries([key])
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        if not got.entries:
            return None
        data = x.LedgerEntryData.from_xdr(got.entries[0].xdr)
        assert data.account is not None  # noqa: S101 - an ACCOUNT key answers an account
        return int(data.account.seq_num.sequence_number.int64)

    async def trustline(self, account: str, code: str, issuer: str) -> Trustline | None:
        key = x.LedgerKey(
            x.LedgerEntryType.TRUSTLINE,
            trust_line=x.LedgerKeyTrustLine(
                Keypair.from_public_key(account).xdr_account_id(),
                Asset(code, issuer).to_trust_line_asset_xdr_object(),
            ),
        )
        try:
            got = await self.server.get_ledger_entries([key])
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        if not got.entries:
            return None
        data = x.LedgerEntryData.from_xdr(got.entries[0].xdr)
        assert data.trust_line is not None  # noqa: S101
        line = data.trust_line
        return Trustline(
            int(line.balance.int64), int(line.limit.int64),
            bool(line.flags.uint32 & AUTHORIZED_FLAG),
        )  # fmt: skip

    async def contract_exists(self, contract: str) -> bool:
        key = x.LedgerKey(
            x.LedgerEntryType.CONTRACT_DATA,
            contract_data=x.LedgerKeyContractData(
                Address(contract).to_xdr_sc_address(),
                x.SCVal(x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
                x.ContractDataDurability.PERSISTENT,
            ),
        )
        try:
            got = await self.server.get_ledger_entries([key])
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        return bool(got.entries)

    async def build_mint(
        self,
        *,
        contract: str,
        to: str,
        amount: int,
        channel: Keypair,
        seq: int,
        admin: Keypair,
        timeout_s: int,
    ) -> Envelope:
        """The signed envelope of ``mint(to, amount)`` on ``contract`` with sequence number
        ``seq`` from ``channel``; the admin's authorization entry (a fresh nonce) is valid a
        little past the transaction's ``maxTime``. Raises :class:`CallRefused` when the
        simulation fails."""
        args = [Address(to).to_xdr_sc_val(), scval.to_int128(amount)]
        call = x.InvokeContractArgs(
            Address(contract).to_xdr_sc_address(), x.SCSymbol(b"mint"), args
        )
        entry = x.SorobanAuthorizationEntry(
            x.SorobanCredentials(
                x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
                address=x.SorobanAddressCredentials(
                    Address(admin.public_key).to_xdr_sc_address(),
                    x.Int64(secrets.randbits(63)), x.Uint32(0), x.SCVal(x.SCValType.SCV_VOID),
                ),
            ),
            x.SorobanAuthorizedInvocation(
                x.SorobanAuthorizedFunction(
                    x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                    contract_fn=call,
                ),
                [],
            ),
        )  # fmt: skip
        latest, _ = await self.latest()
        valid_until = latest + timeout_s // 5 + AUTH_LEDGER_MARGIN
        signed = authorize_entry(entry, admin, valid_until, self.passphrase)
        tx = (
            TransactionBuilder(Account(channel.public_key, seq - 1), self.passphrase, BASE_FEE)
            .set_timeout(timeout_s)
            .append_invoke_contract_function_op(contract, "mint", args, auth=[signed])
            .build()
        )
        try:
            prepared = await self.server.prepare_transaction(tx, use_upgraded_auth=False)
        except PrepareTransactionException as exc:
            raise CallRefused(exc.simulate_transaction_response.error or str(exc)) from exc
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        prepared.sign(channel)
        bounds = prepared.transaction.preconditions
        max_time = bounds.time_bounds.max_time if bounds and bounds.time_bounds else 0
        return Envelope(prepared.to_xdr(), prepared.hash(), channel.public_key, seq, max_time)

    async def send(self, envelope_xdr: str) -> Sent:
        try:
            got = await self.server.send_transaction(envelope_xdr)
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        error = None
        if got.error_result_xdr:
            error = x.TransactionResult.from_xdr(got.error_result_xdr).result.code.name
        return Sent(SendStatus(got.status.value), error, got.latest_ledger)

    async def seen(self, tx_hash: bytes) -> Seen:
        try:
            got = await self.server.get_transaction(tx_hash.hex())
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        code = None
        if got.result_xdr:
            code = x.TransactionResult.from_xdr(got.result_xdr).result.code.name
        return Seen(
            got.status.value,
            got.ledger,
            code,
            got.latest_ledger,
            got.latest_ledger_close_time,
            got.oldest_ledger_close_time,
        )

    async def events(
        self,
        contracts: Sequence[str],
        *,
        start_ledger: int | None = None,
        end_ledger: int | None = None,
        cursor: str | None = None,
        limit: int = 200,
        kinds: Sequence[str] = ("burn", "mint"),
    ) -> tuple[list[BurnEvent], str, int]:
        """One page of the SACs' ``burn``/``mint`` events: (events, next cursor, latest
        ledger)."""
        filters = [
            EventFilter(type=EventFilterType.CONTRACT, contractIds=list(contracts),
                        topics=[[burn_topic(k), "*", "*"]])
            for k in kinds
        ]  # fmt: skip
        try:
            got = await self.server.get_events(
                start_ledger=None if cursor else start_ledger,
                end_ledger=None if cursor else end_ledger,
                filters=filters, cursor=cursor, limit=limit,
            )  # fmt: skip
        except (SdkError, OSError) as exc:
            raise _rpc(exc) from exc
        return [_decode_event(e) for e in got.events], got.cursor, got.latest_ledger


def _decode_event(e: EventInfo) -> BurnEvent:
    topics = [x.SCVal.from_xdr(t) for t in e.topic]
    kind = scval.from_symbol(topics[0])
    address = scval.from_address(topics[1]).address
    asset = scval.from_string(topics[2]).decode()
    value = x.SCVal.from_xdr(e.value)
    if value.type is x.SCValType.SCV_MAP:  # CAP-67: {amount, to_muxed_id}
        fields = scval.from_map(value)
        value = next(v for k, v in fields.items() if scval.from_symbol(k) == "amount")
    toid, index = e.id.split("-")
    return BurnEvent(
        e.id, kind, e.contract_id, e.ledger, bytes.fromhex(e.transaction_hash),
        int(toid) & 0xFFF, int(index), address, asset, int(scval.from_int128(value)),
    )  # fmt: skip


class Destinations:
    """:class:`core.bridges.stellar.DestinationCheck` against the network: a G-address needs an
    AUTHORIZED trustline to the asset, a C-address an existing contract."""

    def __init__(self, client: StellarClient) -> None:
        self.client = client

    async def __call__(self, token: StellarToken, to: str) -> str | None:
        if to == token.issuer:
            return "the issuer cannot receive its own asset"
        try:
            if to.startswith("C"):
                if not await self.client.contract_exists(to):
                    return f"no contract exists at {to}"
                return None
            line = await self.client.trustline(to, token.code, token.issuer)
        except StellarRpcError as exc:
            return f"the Stellar network could not be asked: {exc}"
        if line is None:
            return f"{to} has no trustline to {token.sep11}"
        if not line.authorized:
            return f"{to}'s trustline to {token.sep11} is not authorized by the issuer"
        return None
