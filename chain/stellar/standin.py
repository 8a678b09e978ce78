"""A local Soroban RPC stand-in -- a TEST DOUBLE, not a Stellar network.

No Stellar network can run on the development machines (no package ships stellar-core, an RPC
server or the Soroban host), so the bridge is exercised against this loopback JSON-RPC server,
which the unmodified ``stellar_sdk.SorobanServerAsync`` talks to over HTTP. It implements
``getHealth``, ``getNetwork``, ``getLatestLedger``, ``getLedgers``, ``getLedgerEntries``,
``simulateTransaction``, ``sendTransaction``, ``getTransaction`` and ``getEvents`` and checks
what a real network would refuse:

* the envelope is decoded from its XDR; its hash is computed under the stand-in's network
  passphrase, so a transaction signed for another network fails its signature check;
* every envelope signature is verified (missing -> ``txBAD_AUTH``, one that signs nothing
  -> ``txBAD_AUTH_EXTRA``), and every Soroban authorization entry: ADDRESS credentials carry
  the account's ed25519 signature over the ``ENVELOPE_TYPE_SOROBAN_AUTHORIZATION`` preimage,
  a nonce never used before, an expiration ledger not passed, and a root invocation equal to
  the call; SOURCE_ACCOUNT credentials only for the transaction's source;
* sequence numbers (``txBAD_SEQ``), time bounds (``txTOO_EARLY``, ``txTOO_LATE``; a queued
  transaction whose ``maxTime`` a closing ledger passes is dropped, never applied), the
  minimum fee (inclusion fee >= 100 stroops per operation, declared resource fee >= the
  simulated one: ``txINSUFFICIENT_FEE``), the footprint (an entry touched outside it fails
  the call), one queued transaction per source account (``TRY_AGAIN_LATER``);
* the Stellar Asset Contract semantics the bridge uses: ``mint`` (admin), ``burn`` and
  ``transfer`` (the holder), ``balance``, ``set_authorized`` (admin), trustlines (exist,
  AUTHORIZED flag, limit, i64), issuer rules (the issuer holds no trustline; a payment to it
  burns, from it mints), plus the classic operations around them (CreateAccount, ChangeTrust,
  SetTrustLineFlags, SetOptions flags, Payment) and the SAC's deployment from its asset;
  events are CAP-67's (``["mint", to, "CODE:ISSUER"]``, ``["burn", from, asset]``,
  ``["transfer", from, to, asset]``, data an i128) in ``TransactionMetaV4``;
* ledgers close on a clock (``ledger_interval_s``) or on demand (``standin_closeLedger``),
  at the wall clock's time (or a later one given, to pass a ``maxTime``); history older than
  ``retention_ledgers`` is forgotten (``getEvents`` below it is an error, ``getTransaction``
  answers NOT_FOUND), as a real RPC's retention window;
* faults on demand (``standin_fault``): ``TRY_AGAIN_LATER``, ``DROP`` (answered PENDING,
  never applied), ``LATE`` (applied ``ledgers`` closes later), ``ERROR`` (refused with a
  result code), ``RPC_DOWN`` (HTTP 503).

What it does NOT prove (see the README): the Soroban host's own authorization and budget
rules, real fees and resource metering, footprint completeness as the host computes it,
state archival (TTL, restore), surge pricing, stellar-core's queue and ledger close. Only the
SAC subset above exists; no Wasm contract runs. The bridge's envelopes are checked a second
time by an independent XDR implementation (the JavaScript ``@stellar/stellar-sdk``) in the
tests.

Run alone (``make run``, the bench): ``python -m chain.stellar.standin --port 8010``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiohttp import web
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from stellar_sdk import Address, Asset, Keypair, Network, StrKey, scval
from stellar_sdk import xdr as x

__all__ = ["Fault", "StandIn", "serve_in_thread"]

log = logging.getLogger(__name__)

PROTOCOL = 23
BASE_FEE = 100
INT64_MAX = 2**63 - 1
#: the resource fee a simulation asks for: fixed + per footprint entry (stroops)
RESOURCE_FEE_BASE = 50_000
RESOURCE_FEE_PER_ENTRY = 5_000
AUTHORIZED = x.TrustLineFlags.AUTHORIZED_FLAG.value
AUTH_REQUIRED = x.AccountFlags.AUTH_REQUIRED_FLAG.value


class Fault(StrEnum):
    TRY_AGAIN_LATER = "TRY_AGAIN_LATER"
    DROP = "DROP"
    LATE = "LATE"
    ERROR = "ERROR"
    RPC_DOWN = "RPC_DOWN"


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Refused(Exception):
    """A transaction refused at admission (sendTransaction ERROR) with a result code."""

    def __init__(self, code: x.TransactionResultCode) -> None:
        super().__init__(code.name)
        self.code = code


class _CallFailed(Exception):
    """A contract call that fails when applied or simulated (the host's error)."""


AssetKey = tuple[str, str]  # (code, issuer)


@dataclass
class _Account:
    seq: int
    balance: int
    flags: int = 0


@dataclass
class _Trustline:
    balance: int
    limit: int
    flags: int


@dataclass
class _Sac:
    asset: AssetKey
    admin: str


@dataclass
class _Queued:
    hash: bytes
    envelope: str
    source: str
    seq: int
    max_time: int
    #: apply at the first close at or after this ledger; None: never (dropped)
    apply_at: int | None


@dataclass
class _Applied:
    hash: bytes
    envelope: str
    ledger: int
    close_time: int
    order: int
    success: bool
    result: str
    meta: str


@dataclass
class _Event:
    id: str
    ledger: int
    close_time: int
    contract: str
    topics: list[str]
    value: str
    tx_hash: str
    tx_index: int
    op_index: int


@dataclass
class _Effects:
    """What a call would do: checked in full before anything is applied."""

    deltas: list[tuple[tuple[str, ...], int]] = field(default_factory=list)
    events: list[x.ContractEvent] = field(default_factory=list)
    touched: list[x.LedgerKey] = field(default_factory=list)
    read: list[x.LedgerKey] = field(default_factory=list)
    auths: list[str] = field(default_factory=list)
    retval: x.SCVal = field(default_factory=lambda: x.SCVal(x.SCValType.SCV_VOID))
    apply: list[Callable[[], None]] = field(default_factory=list)


def _b64(obj: Any) -> str:
    return str(obj.to_xdr())


def _asset_string(asset: AssetKey) -> str:
    return f"{asset[0]}:{asset[1]}"


def _tl_asset(asset: AssetKey) -> x.TrustLineAsset:
    return Asset(*asset).to_trust_line_asset_xdr_object()


def _account_key(account: str) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.ACCOUNT,
        account=x.LedgerKeyAccount(Keypair.from_public_key(account).xdr_account_id()),
    )


def _trustline_key(account: str, asset: AssetKey) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.TRUSTLINE,
        trust_line=x.LedgerKeyTrustLine(
            Keypair.from_public_key(account).xdr_account_id(), _tl_asset(asset)
        ),
    )


def _contract_data_key(contract: str, key: x.SCVal) -> x.LedgerKey:
    return x.LedgerKey(
        x.LedgerEntryType.CONTRACT_DATA,
        contract_data=x.LedgerKeyContractData(
            Address(contract).to_xdr_sc_address(), key, x.ContractDataDurability.PERSISTENT
        ),
    )


def _instance_key(contract: str) -> x.LedgerKey:
    return _contract_data_key(contract, x.SCVal(x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE))


def _balance_key(contract: str, holder: str) -> x.LedgerKey:
    key = x.SCVal(
        x.SCValType.SCV_VEC,
        vec=x.SCVec([x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(b"Balance")),
                     Address(holder).to_xdr_sc_val()]),
    )  # fmt: skip
    return _contract_data_key(contract, key)


def _i128(value: int) -> x.SCVal:
    return scval.to_int128(value)


def _from_i128(value: x.SCVal) -> int:
    if value.type is not x.SCValType.SCV_I128:
        raise _CallFailed("Error(Value, UnexpectedType): amount is not an i128")
    return int(scval.from_int128(value))


def _address(value: x.SCVal) -> str:
    if value.type is not x.SCValType.SCV_ADDRESS or value.address is None:
        raise _CallFailed("Error(Value, UnexpectedType): not an address")
    found = Address.from_xdr_sc_address(value.address).address
    if not (found.startswith("G") or found.startswith("C")):
        raise _CallFailed("Error(Value, UnexpectedType): unsupported address type")
    return found


def _sym(name: str) -> x.SCVal:
    return x.SCVal(x.SCValType.SCV_SYMBOL, sym=x.SCSymbol(name.encode()))


def _event(contract: str, topics: list[x.SCVal], data: x.SCVal) -> x.ContractEvent:
    return x.ContractEvent(
        x.ExtensionPoint(0),
        x.ContractID(x.Hash(StrKey.decode_contract(contract))),
        x.ContractEventType.CONTRACT,
        x.ContractEventBody(0, v0=x.ContractEventV0(topics, data)),
    )


def _tx_result(fee: int, code: x.TransactionResultCode, ops: list[x.OperationResult]) -> str:
    return _b64(
        x.TransactionResult(
            x.Int64(fee),
            x.TransactionResultResult(code, results=ops if code in _WITH_OPS else None),
            x.TransactionResultExt(0),
        )
    )


_WITH_OPS = (x.TransactionResultCode.txSUCCESS, x.TransactionResultCode.txFAILED)


class StandIn:
    """The in-memory network and its JSON-RPC methods (thread-safe)."""

    def __init__(
        self,
        passphrase: str = "Value OS stand-in network ; not a Stellar network",
        *,
        retention_ledgers: int = 17_280,
        close_step_s: int = 5,
        start_ledger: int = 100,
    ) -> None:
        self.passphrase = passphrase
        self.network_id = Network(passphrase).network_id()
        self.retention_ledgers = retention_ledgers
        self.close_step_s = close_step_s
        self.lock = threading.RLock()
        self.ledger = start_ledger
        self.first_ledger = start_ledger
        self.close_time = int(time.time())
        self.ledger_hashes: dict[int, tuple[bytes, int]] = {
            start_ledger: (hashlib.sha256(b"genesis" + passphrase.encode()).digest(),
                           self.close_time)
        }  # fmt: skip
        self.accounts: dict[str, _Account] = {}
        self.trustlines: dict[tuple[str, AssetKey], _Trustline] = {}
        self.contract_balances: dict[tuple[str, str], int] = {}
        self.contracts: dict[str, _Sac | None] = {}  # C... -> SAC (None: another contract)
        self.used_nonces: set[tuple[str, int]] = set()
        self.queue: list[_Queued] = []
        self.applied: dict[bytes, _Applied] = {}
        self.events: list[_Event] = []
        self.faults: list[tuple[Fault, dict[str, Any]]] = []
        self.sent = 0

    # -- test-double controls ---------------------------------------------------------------
    def fund(self, account: str, balance: int = 10_000 * 10**7) -> None:
        """Create ``account`` (the stand-in's friendbot)."""
        with self.lock:
            self.accounts.setdefault(account, _Account(seq=self.ledger << 32, balance=balance))

    def add_contract(self, contract: str) -> None:
        """A contract other than a SAC exists at ``contract`` (it runs nothing)."""
        with self.lock:
            self.contracts.setdefault(contract, None)

    def inject(self, fault: Fault, *, count: int = 1, **params: Any) -> None:
        with self.lock:
            self.faults.extend((fault, params) for _ in range(count))

    def close_ledger(self, count: int = 1, *, now: int | None = None) -> int:
        with self.lock:
            for _ in range(count):
                self._close(now)
            return self.ledger

    def supply(self, contract: str) -> int:
        """Every unit of the SAC's asset held outside its issuer (trustlines and contracts)."""
        with self.lock:
            sac = self.contracts[contract]
            assert sac is not None  # noqa: S101 - test helper
            held = sum(t.balance for (_, a), t in self.trustlines.items() if a == sac.asset)
            return held + sum(v for (c, _), v in self.contract_balances.items() if c == contract)

    def balance(self, contract: str, holder: str) -> int:
        with self.lock:
            sac = self.contracts[contract]
            assert sac is not None  # noqa: S101 - test helper
            if holder.startswith("C"):
                return self.contract_balances.get((contract, holder), 0)
            line = self.trustlines.get((holder, sac.asset))
            return 0 if line is None else line.balance

    # -- ledger close -----------------------------------------------------------------------
    @property
    def oldest_ledger(self) -> int:
        return max(self.first_ledger, self.ledger - self.retention_ledgers + 1)

    def _close(self, now: int | None) -> None:
        seq = self.ledger + 1
        close_time = max(now if now is not None else int(time.time()), self.close_time + 1)
        ready = [q for q in self.queue if q.apply_at is not None and q.apply_at <= seq]
        order = 0
        hashes = b""
        for q in ready:
            self.queue.remove(q)
            if q.max_time and q.max_time < close_time:
                continue  # too late by now: dropped from the queue, never applied
            order += 1
            self._apply(q, seq, close_time, order)
            hashes += q.hash
        # a queued transaction whose time ran out is never applied: dropped
        self.queue = [q for q in self.queue if not (q.max_time and q.max_time < close_time)]
        prev = self.ledger_hashes[self.ledger][0]
        self.ledger_hashes[seq] = (
            hashlib.sha256(prev + seq.to_bytes(8, "big") + close_time.to_bytes(8, "big") + hashes)
            .digest(),
            close_time,
        )  # fmt: skip
        self.ledger, self.close_time = seq, close_time
        oldest = self.oldest_ledger
        for old in [s for s in self.ledger_hashes if s < oldest]:
            del self.ledger_hashes[old]
        self.events = [e for e in self.events if e.ledger >= oldest]
        for h in [h for h, a in self.applied.items() if a.ledger < oldest]:
            del self.applied[h]

    # -- admission --------------------------------------------------------------------------
    def _decode(self, envelope: str) -> tuple[x.TransactionEnvelope, x.Transaction, bytes]:
        try:
            env = x.TransactionEnvelope.from_xdr(envelope)
        except Exception as exc:
            raise RpcError(-32602, f"invalid transaction XDR: {exc}") from exc
        if env.type is not x.EnvelopeType.ENVELOPE_TYPE_TX or env.v1 is None:
            raise _Refused(x.TransactionResultCode.txNOT_SUPPORTED)
        tx = env.v1.tx
        payload = x.TransactionSignaturePayload(
            x.Hash(self.network_id),
            x.TransactionSignaturePayloadTaggedTransaction(x.EnvelopeType.ENVELOPE_TYPE_TX, tx=tx),
        )
        return env, tx, hashlib.sha256(payload.to_xdr_bytes()).digest()

    def _source(self, tx: x.Transaction) -> str:
        muxed = tx.source_account
        raw = muxed.ed25519.uint256 if muxed.ed25519 else muxed.med25519.ed25519.uint256
        return StrKey.encode_ed25519_public_key(raw)

    def _check_signatures(
        self, env: x.TransactionEnvelope, tx_hash: bytes, signers: set[str]
    ) -> None:
        """Every account in ``signers`` signed ``tx_hash`` with its master key, and every
        signature is one of theirs."""
        assert env.v1 is not None  # noqa: S101 - checked by _decode
        missing = set(signers)
        for sig in env.v1.signatures:
            hint = sig.hint.signature_hint
            matched = None
            for account in missing | signers:
                raw = StrKey.decode_ed25519_public_key(account)
                if raw[-4:] != hint:
                    continue
                try:
                    VerifyKey(raw).verify(tx_hash, sig.signature.signature)
                except BadSignatureError:
                    continue
                matched = account
                break
            if matched is None:
                raise _Refused(x.TransactionResultCode.txBAD_AUTH_EXTRA if not missing
                               else x.TransactionResultCode.txBAD_AUTH)  # fmt: skip
            missing.discard(matched)
        if missing:
            raise _Refused(x.TransactionResultCode.txBAD_AUTH)

    def _op_sources(self, tx: x.Transaction, source: str) -> set[str]:
        found = {source}
        for op in tx.operations:
            if op.source_account is not None:
                m = op.source_account
                raw = m.ed25519.uint256 if m.ed25519 else m.med25519.ed25519.uint256
                found.add(StrKey.encode_ed25519_public_key(raw))
        return found

    def _admit(self, envelope: str) -> tuple[str, bytes, x.TransactionResultCode | None]:
        """(status, hash, error code) of sendTransaction."""
        env, tx, tx_hash = self._decode(envelope)
        if any(q.hash == tx_hash for q in self.queue):
            return "DUPLICATE", tx_hash, None
        source = self._source(tx)
        account = self.accounts.get(source)
        if account is None:
            raise _Refused(x.TransactionResultCode.txNO_ACCOUNT)
        for needed in self._op_sources(tx, source):
            if needed not in self.accounts:
                raise _Refused(x.TransactionResultCode.txNO_ACCOUNT)
        self._check_signatures(env, tx_hash, self._op_sources(tx, source))
        # one queued transaction per source account (stellar-core's limit for Soroban)
        if any(q.source == source for q in self.queue):
            return "TRY_AGAIN_LATER", tx_hash, None
        if tx.seq_num.sequence_number.int64 != account.seq + 1:
            raise _Refused(x.TransactionResultCode.txBAD_SEQ)
        bounds = tx.cond.time_bounds if tx.cond.time_bounds else (
            tx.cond.v2.time_bounds if tx.cond.v2 else None
        )  # fmt: skip
        max_time = 0 if bounds is None else bounds.max_time.time_point.uint64
        min_time = 0 if bounds is None else bounds.min_time.time_point.uint64
        if min_time and min_time > max(self.close_time, int(time.time())) + self.close_step_s:
            raise _Refused(x.TransactionResultCode.txTOO_EARLY)
        if max_time and max_time < self.close_time:
            raise _Refused(x.TransactionResultCode.txTOO_LATE)
        self._check_fee(tx)
        self.queue.append(
            _Queued(tx_hash, envelope, source, tx.seq_num.sequence_number.int64, max_time,
                    self.ledger + 1)
        )  # fmt: skip
        return "PENDING", tx_hash, None

    def _check_fee(self, tx: x.Transaction) -> None:
        fee = tx.fee.uint32
        ops = len(tx.operations)
        soroban = tx.ext.soroban_data if tx.ext.v == 1 else None
        declared = 0 if soroban is None else soroban.resource_fee.int64
        is_host = any(o.body.type is x.OperationType.INVOKE_HOST_FUNCTION for o in tx.operations)
        if is_host and (soroban is None or ops != 1):
            raise _Refused(x.TransactionResultCode.txMALFORMED)
        if fee - declared < BASE_FEE * ops:
            raise _Refused(x.TransactionResultCode.txINSUFFICIENT_FEE)
        if soroban is not None:
            fp = soroban.resources.footprint
            entries = len(fp.read_only) + len(fp.read_write)
            if declared < RESOURCE_FEE_BASE + RESOURCE_FEE_PER_ENTRY * entries:
                raise _Refused(x.TransactionResultCode.txINSUFFICIENT_FEE)

    def send(self, envelope: str) -> dict[str, Any]:
        with self.lock:
            self.sent += 1
            fault, params = self.faults.pop(0) if self.faults else (None, {})
            base = {"latestLedger": self.ledger, "latestLedgerCloseTime": str(self.close_time)}
            if fault is Fault.TRY_AGAIN_LATER:
                _, _, tx_hash = self._decode(envelope)
                return base | {"status": "TRY_AGAIN_LATER", "hash": tx_hash.hex()}
            if fault is Fault.ERROR:
                _, _, tx_hash = self._decode(envelope)
                code = x.TransactionResultCode[params.get("code", "txINTERNAL_ERROR")]
                return base | {"status": "ERROR", "hash": tx_hash.hex(),
                               "errorResultXdr": _tx_result(0, code, [])}  # fmt: skip
            try:
                status, tx_hash, _ = self._admit(envelope)
            except _Refused as exc:
                _, _, tx_hash = self._decode(envelope)
                return base | {"status": "ERROR", "hash": tx_hash.hex(),
                               "errorResultXdr": _tx_result(0, exc.code, [])}  # fmt: skip
            if status == "PENDING" and fault is Fault.DROP:
                self.queue.pop()  # answered PENDING, then forgotten: never applied
            elif status == "PENDING" and fault is Fault.LATE:
                self.queue[-1].apply_at = self.ledger + 1 + int(params.get("ledgers", 3))
            return base | {"status": status, "hash": tx_hash.hex()}

    # -- applying ---------------------------------------------------------------------------
    def _apply(self, q: _Queued, seq: int, close_time: int, order: int) -> None:
        _, tx, tx_hash = self._decode(q.envelope)
        source = self._source(tx)
        account = self.accounts.get(source)
        if account is None or account.seq + 1 != q.seq:
            return  # sequence taken meanwhile: not applied
        account.seq = q.seq
        fee = tx.fee.uint32
        account.balance -= fee
        results: list[x.OperationResult] = []
        events: list[list[x.ContractEvent]] = []
        # a failed transaction applies nothing but its fee and sequence number
        saved = copy.deepcopy((self.accounts, self.trustlines, self.contract_balances,
                               self.contracts)) if len(tx.operations) > 1 else None  # fmt: skip
        retval = None
        success = True
        for index, op in enumerate(tx.operations):
            op_source = source
            if op.source_account is not None:
                m = op.source_account
                op_source = StrKey.encode_ed25519_public_key(
                    m.ed25519.uint256 if m.ed25519 else m.med25519.ed25519.uint256
                )
            try:
                effects = self._operation(op, op_source, tx, seq, enforce=True)
            except _CallFailed as exc:
                log.info("stand-in: tx %s op %d failed: %s", tx_hash.hex(), index, exc)
                results.append(_op_result(op.body.type, ok=False))
                success = False
                break
            results.append(_op_result(op.body.type, ok=True, retval_hash=tx_hash))
            events.append(effects.events)
            retval = effects.retval
            for fn in effects.apply:
                fn()
        if not success:
            events = []
            results += [_op_result(o.body.type, ok=False, skipped=True)
                        for o in tx.operations[len(results):]]  # fmt: skip
            if saved is not None:
                self.accounts, self.trustlines, self.contract_balances, self.contracts = saved
                self.accounts[source].seq, self.accounts[source].balance = q.seq, account.balance
        code = x.TransactionResultCode.txSUCCESS if success else x.TransactionResultCode.txFAILED
        soroban = tx.ext.v == 1
        meta = x.TransactionMeta(
            4,
            v4=x.TransactionMetaV4(
                x.ExtensionPoint(0), x.LedgerEntryChanges([]),
                [x.OperationMetaV2(x.ExtensionPoint(0), x.LedgerEntryChanges([]), evs)
                 for evs in events],
                x.LedgerEntryChanges([]),
                x.SorobanTransactionMetaV2(x.SorobanTransactionMetaExt(0), retval)
                if soroban and success else None,
                [], [],
            ),
        )  # fmt: skip
        self.applied[q.hash] = _Applied(
            q.hash, q.envelope, seq, close_time, order, success,
            _tx_result(fee, code, results), _b64(meta),
        )  # fmt: skip
        for op_index, evs in enumerate(events):
            for ev_index, ev in enumerate(evs):
                assert ev.contract_id is not None and ev.body.v0 is not None  # noqa: S101
                toid = (seq << 32) | (order << 12) | (op_index + 1)
                self.events.append(
                    _Event(
                        f"{toid:019d}-{ev_index:010d}", seq, close_time,
                        StrKey.encode_contract(ev.contract_id.contract_id.hash),
                        [_b64(t) for t in ev.body.v0.topics], _b64(ev.body.v0.data),
                        q.hash.hex(), order, op_index,
                    )
                )  # fmt: skip

    def _operation(
        self, op: x.Operation, source: str, tx: x.Transaction, seq: int, *, enforce: bool
    ) -> _Effects:
        body = op.body
        t = x.OperationType
        if body.type is t.INVOKE_HOST_FUNCTION:
            assert body.invoke_host_function_op is not None  # noqa: S101
            return self._host(body.invoke_host_function_op, source, tx, seq, enforce=enforce)
        effects = _Effects()
        if body.type is t.CREATE_ACCOUNT:
            a = body.create_account_op
            dest = StrKey.encode_ed25519_public_key(a.destination.account_id.ed25519.uint256)
            if dest in self.accounts:
                raise _CallFailed("CREATE_ACCOUNT_ALREADY_EXIST")
            effects.apply.append(lambda: self.fund(dest, a.starting_balance.int64))
        elif body.type is t.CHANGE_TRUST:
            c = body.change_trust_op
            asset = _asset_of(c.line)
            issuer = self.accounts.get(asset[1])
            if issuer is None or asset[1] == source:
                raise _CallFailed("CHANGE_TRUST_NO_ISSUER or self-trust")
            limit = c.limit.int64

            def trust() -> None:
                line = self.trustlines.get((source, asset))
                if line is None:
                    flags = 0 if issuer.flags & AUTH_REQUIRED else AUTHORIZED
                    self.trustlines[(source, asset)] = _Trustline(0, limit, flags)
                else:
                    line.limit = limit

            effects.apply.append(trust)
        elif body.type is t.SET_TRUST_LINE_FLAGS:
            s = body.set_trust_line_flags_op
            asset = _asset_of_x(s.asset)
            trustor = StrKey.encode_ed25519_public_key(s.trustor.account_id.ed25519.uint256)
            line = self.trustlines.get((trustor, asset))
            if asset[1] != source or line is None:
                raise _CallFailed("SET_TRUST_LINE_FLAGS_NO_TRUST_LINE or not the issuer")
            clear, put = s.clear_flags.uint32, s.set_flags.uint32
            effects.apply.append(lambda: setattr(line, "flags", (line.flags & ~clear) | put))
        elif body.type is t.SET_OPTIONS:
            o = body.set_options_op
            acct = self.accounts[source]
            put = o.set_flags.uint32 if o.set_flags else 0
            clear = o.clear_flags.uint32 if o.clear_flags else 0
            effects.apply.append(lambda: setattr(acct, "flags", (acct.flags & ~clear) | put))
        elif body.type is t.PAYMENT:
            p = body.payment_op
            m = p.destination
            dest = StrKey.encode_ed25519_public_key(
                m.ed25519.uint256 if m.ed25519 else m.med25519.ed25519.uint256
            )
            if p.asset.type is x.AssetType.ASSET_TYPE_NATIVE:
                raise _CallFailed("native payments are not modelled")
            asset = _asset_of_x(p.asset)
            contract = self._sac_of(asset)
            self._move(effects, contract, asset, source, dest, p.amount.int64)
        else:
            raise _CallFailed(f"operation {body.type.name} is not modelled by the stand-in")
        return effects

    def _sac_of(self, asset: AssetKey) -> str:
        return Asset(*asset).contract_id(self.passphrase)

    def _holder(self, contract: str, asset: AssetKey, who: str, delta: int) -> tuple[str, ...]:
        """Check that ``who`` may receive (delta > 0) or send (delta < 0) ``|delta|``; the key of
        its balance. The issuer holds nothing (unbounded)."""
        if who == asset[1]:
            return ("issuer",)
        if who.startswith("C"):
            have = self.contract_balances.get((contract, who), 0)
            if have + delta < 0:
                raise _CallFailed("Error(Contract, #10): balance is not sufficient to spend")
            if who not in self.contracts:
                raise _CallFailed("Error(Storage, MissingValue): no such contract")
            return ("cb", contract, who)
        line = self.trustlines.get((who, asset))
        if line is None:
            raise _CallFailed("Error(Contract, #13): trustline entry is missing for account")
        if not line.flags & AUTHORIZED:
            raise _CallFailed("Error(Contract, #10): account is not authorized")
        if line.balance + delta < 0:
            raise _CallFailed("Error(Contract, #10): balance is not sufficient to spend")
        if line.balance + delta > min(line.limit, INT64_MAX):
            raise _CallFailed("Error(Contract, #10): balance would exceed the trustline limit")
        return ("tl", who, *asset)

    def _key_of(self, contract: str, asset: AssetKey, holder: tuple[str, ...]) -> x.LedgerKey:
        if holder[0] == "tl":
            return _trustline_key(holder[1], asset)
        if holder[0] == "cb":
            return _balance_key(contract, holder[2])
        return _account_key(asset[1])

    def _credit(self, holder: tuple[str, ...], delta: int) -> None:
        if holder[0] == "tl":
            self.trustlines[(holder[1], (holder[2], holder[3]))].balance += delta
        elif holder[0] == "cb":
            key = (holder[1], holder[2])
            self.contract_balances[key] = self.contract_balances.get(key, 0) + delta

    def _move(
        self, effects: _Effects, contract: str, asset: AssetKey, frm: str, to: str, amount: int
    ) -> None:
        """A transfer (a mint from the issuer, a burn to it), CAP-67's event with it."""
        if amount <= 0:
            raise _CallFailed("Error(Contract, #5): negative amount is not allowed")
        a = x.SCVal(x.SCValType.SCV_STRING, str=x.SCString(_asset_string(asset).encode()))
        if frm == to and frm == asset[1]:
            raise _CallFailed("the issuer cannot pay itself")
        out = self._holder(contract, asset, frm, -amount)
        into = self._holder(contract, asset, to, amount)
        for holder in (out, into):
            if holder[0] != "issuer":
                effects.touched.append(self._key_of(contract, asset, holder))

        def move() -> None:
            self._credit(out, -amount)
            self._credit(into, amount)

        effects.apply.append(move)
        if frm == asset[1]:
            topics = [_sym("mint"), Address(to).to_xdr_sc_val(), a]
        elif to == asset[1]:
            topics = [_sym("burn"), Address(frm).to_xdr_sc_val(), a]
        else:
            topics = [_sym("transfer"), Address(frm).to_xdr_sc_val(), Address(to).to_xdr_sc_val(),
                      a]  # fmt: skip
        effects.events.append(_event(contract, topics, _i128(amount)))

    def _host(
        self, op: x.InvokeHostFunctionOp, source: str, tx: x.Transaction, seq: int, *,
        enforce: bool,
    ) -> _Effects:  # fmt: skip
        fn = op.host_function
        effects = _Effects()
        if fn.type is x.HostFunctionType.HOST_FUNCTION_TYPE_CREATE_CONTRACT:
            pre = fn.create_contract.contract_id_preimage
            if pre.type is not x.ContractIDPreimageType.CONTRACT_ID_PREIMAGE_FROM_ASSET:
                raise _CallFailed("only Stellar Asset Contracts can be deployed here")
            asset = _asset_of_x(pre.from_asset)
            contract = self._sac_of(asset)
            if contract in self.contracts:
                raise _CallFailed("Error(Storage, ExistingValue): contract already exists")
            if asset[1] not in self.accounts:
                raise _CallFailed("the asset's issuer does not exist")
            effects.touched.append(_instance_key(contract))
            effects.apply.append(
                lambda: self.contracts.__setitem__(contract, _Sac(asset, asset[1]))
            )
            effects.retval = Address(contract).to_xdr_sc_val()
            return effects
        if fn.type is not x.HostFunctionType.HOST_FUNCTION_TYPE_INVOKE_CONTRACT:
            raise _CallFailed("only contract invocations and SAC deployment are modelled")
        call = fn.invoke_contract
        contract = Address.from_xdr_sc_address(call.contract_address).address
        sac = self.contracts.get(contract)
        if sac is None:
            raise _CallFailed("Error(Storage, MissingValue): no Stellar Asset Contract there")
        name = call.function_name.sc_symbol.decode()
        args = call.args
        effects.read.append(_instance_key(contract))
        if name == "mint" and len(args) == 2:
            effects.auths.append(sac.admin)
            self._move(effects, contract, sac.asset, sac.asset[1], _address(args[0]),
                       _from_i128(args[1]))  # fmt: skip
        elif name == "burn" and len(args) == 2:
            frm = _address(args[0])
            effects.auths.append(frm)
            self._move(effects, contract, sac.asset, frm, sac.asset[1], _from_i128(args[1]))
        elif name == "transfer" and len(args) == 3:
            frm = _address(args[0])
            effects.auths.append(frm)
            self._move(effects, contract, sac.asset, frm, _address(args[1]), _from_i128(args[2]))
        elif name == "balance" and len(args) == 1:
            effects.retval = _i128(self.balance(contract, _address(args[0])))
        elif name == "set_authorized" and len(args) == 2:
            who = _address(args[0])
            line = self.trustlines.get((who, sac.asset))
            if line is None or args[1].type is not x.SCValType.SCV_BOOL:
                raise _CallFailed("Error(Contract, #13): trustline entry is missing for account")
            effects.auths.append(sac.admin)
            effects.touched.append(_trustline_key(who, sac.asset))
            on = bool(args[1].b)
            effects.apply.append(
                lambda: setattr(line, "flags", line.flags | AUTHORIZED if on
                                else line.flags & ~AUTHORIZED)
            )  # fmt: skip
        elif name == "admin" and not args:
            effects.retval = Address(sac.admin).to_xdr_sc_val()
        else:
            raise _CallFailed(f"Error(WasmVm, MissingValue): no function {name}/{len(args)}")
        if enforce:
            self._authorize(op, call, effects, source, seq)
            self._check_footprint(tx, effects)
        return effects

    def _authorize(
        self, op: x.InvokeHostFunctionOp, call: x.InvokeContractArgs, effects: _Effects,
        source: str, seq: int,
    ) -> None:  # fmt: skip
        """Each address the call needs authorized by an entry for exactly this call."""
        wanted = x.SorobanAuthorizedFunction(
            x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
            contract_fn=call,
        ).to_xdr_bytes()
        for who in effects.auths:
            if not any(self._entry_authorizes(e, who, wanted, source, seq) for e in op.auth):
                raise _CallFailed(f"Error(Auth, InvalidAction): {who} did not authorize the call")

    def _entry_authorizes(
        self, entry: x.SorobanAuthorizationEntry, who: str, wanted: bytes, source: str, seq: int
    ) -> bool:
        creds = entry.credentials
        if entry.root_invocation.function.to_xdr_bytes() != wanted:
            return False
        if creds.type is x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT:
            return who == source
        if creds.type is not x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
            return False  # ADDRESS_V2 and delegates are not part of protocol 23
        c = creds.address
        if Address.from_xdr_sc_address(c.address).address != who or who.startswith("C"):
            return False
        nonce = c.nonce.int64
        if c.signature_expiration_ledger.uint32 < seq or (who, nonce) in self.used_nonces:
            return False
        preimage = x.HashIDPreimage(
            x.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION,
            soroban_authorization=x.HashIDPreimageSorobanAuthorization(
                x.Hash(self.network_id), c.nonce, c.signature_expiration_ledger,
                entry.root_invocation,
            ),
        )  # fmt: skip
        payload = hashlib.sha256(preimage.to_xdr_bytes()).digest()
        sigs = c.signature.vec.sc_vec if c.signature.vec is not None else []
        raw_key = StrKey.decode_ed25519_public_key(who)
        for sig in sigs:
            fields = {m.key.sym.sc_symbol.decode(): m.val for m in (sig.map.sc_map if sig.map else [])
                      if m.key.sym is not None}  # fmt: skip
            pk, sg = fields.get("public_key"), fields.get("signature")
            if pk is None or sg is None or pk.bytes is None or sg.bytes is None:
                continue
            if pk.bytes.sc_bytes != raw_key:
                continue
            try:
                VerifyKey(raw_key).verify(payload, sg.bytes.sc_bytes)
            except BadSignatureError:
                return False
            self.used_nonces.add((who, nonce))
            return True
        return False

    def _check_footprint(self, tx: x.Transaction, effects: _Effects) -> None:
        fp = tx.ext.soroban_data.resources.footprint
        rw = {k.to_xdr_bytes() for k in fp.read_write}
        ro = {k.to_xdr_bytes() for k in fp.read_only} | rw
        for key in effects.touched:
            if key.to_xdr_bytes() not in rw:
                raise _CallFailed("Error(Storage, ExceededLimit): write outside the footprint")
        for key in effects.read:
            if key.to_xdr_bytes() not in ro:
                raise _CallFailed("Error(Storage, ExceededLimit): read outside the footprint")

    # -- simulation -------------------------------------------------------------------------
    def simulate(self, envelope: str) -> dict[str, Any]:
        with self.lock:
            _, tx, _ = self._decode(envelope)
            base: dict[str, Any] = {"latestLedger": self.ledger}
            if len(tx.operations) != 1 or (
                tx.operations[0].body.type is not x.OperationType.INVOKE_HOST_FUNCTION
            ):
                return base | {"error": "simulation needs exactly one InvokeHostFunction"}
            op = tx.operations[0].body.invoke_host_function_op
            assert op is not None  # noqa: S101
            source = self._source(tx)
            try:
                effects = self._host(op, source, tx, self.ledger + 1, enforce=False)
            except _CallFailed as exc:
                return base | {"error": f"HostError: {exc}"}
            auth = list(op.auth)
            if not auth and op.host_function.invoke_contract is not None:
                call = op.host_function.invoke_contract
                for who in effects.auths:
                    auth.append(self._recorded_entry(call, who, source))
            footprint = len(effects.read) + len(effects.touched)
            fee = RESOURCE_FEE_BASE + RESOURCE_FEE_PER_ENTRY * footprint
            data = x.SorobanTransactionData(
                x.SorobanTransactionDataExt(0),
                x.SorobanResources(
                    x.LedgerFootprint(effects.read, effects.touched), x.Uint32(1_000_000),
                    x.Uint32(2_000), x.Uint32(1_000),
                ),
                x.Int64(fee),
            )  # fmt: skip
            return base | {
                "minResourceFee": str(fee),
                "transactionData": _b64(data),
                "results": [{"auth": [_b64(e) for e in auth], "xdr": _b64(effects.retval)}],
                "events": [],
            }

    def _recorded_entry(
        self, call: x.InvokeContractArgs, who: str, source: str
    ) -> x.SorobanAuthorizationEntry:
        invocation = x.SorobanAuthorizedInvocation(
            x.SorobanAuthorizedFunction(
                x.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
                contract_fn=call,
            ),
            [],
        )
        if who == source:
            creds = x.SorobanCredentials(
                x.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
            )
        else:
            creds = x.SorobanCredentials(
                x.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS,
                address=x.SorobanAddressCredentials(
                    Address(who).to_xdr_sc_address(), x.Int64(secrets.randbits(63)),
                    x.Uint32(0), x.SCVal(x.SCValType.SCV_VOID),
                ),
            )  # fmt: skip
        return x.SorobanAuthorizationEntry(creds, invocation)

    # -- reads ------------------------------------------------------------------------------
    def get_transaction(self, tx_hash: str) -> dict[str, Any]:
        with self.lock:
            base = {
                "latestLedger": self.ledger, "latestLedgerCloseTime": str(self.close_time),
                "oldestLedger": self.oldest_ledger,
                "oldestLedgerCloseTime": str(self.ledger_hashes[self.oldest_ledger][1]),
                "txHash": tx_hash,
            }  # fmt: skip
            found = self.applied.get(bytes.fromhex(tx_hash))
            if found is None:
                return base | {"status": "NOT_FOUND"}
            return base | {
                "status": "SUCCESS" if found.success else "FAILED",
                "applicationOrder": found.order, "feeBump": False,
                "envelopeXdr": found.envelope, "resultXdr": found.result,
                "resultMetaXdr": found.meta, "ledger": found.ledger,
                "createdAt": str(found.close_time),
            }  # fmt: skip

    def ledger_entries(self, keys: list[str]) -> dict[str, Any]:
        with self.lock:
            entries = []
            for encoded in keys:
                key = x.LedgerKey.from_xdr(encoded)
                data = self._entry(key)
                if data is not None:
                    entries.append({"key": encoded, "xdr": _b64(data),
                                    "lastModifiedLedgerSeq": self.ledger})  # fmt: skip
            return {"entries": entries, "latestLedger": self.ledger}

    def _entry(self, key: x.LedgerKey) -> x.LedgerEntryData | None:
        t = x.LedgerEntryType
        if key.type is t.ACCOUNT:
            acct_id = key.account.account_id
            g = StrKey.encode_ed25519_public_key(acct_id.account_id.ed25519.uint256)
            a = self.accounts.get(g)
            if a is None:
                return None
            return x.LedgerEntryData(t.ACCOUNT, account=x.AccountEntry(
                acct_id, x.Int64(a.balance), x.SequenceNumber(x.Int64(a.seq)), x.Uint32(0), None,
                x.Uint32(a.flags), x.String32(b""), x.Thresholds(b"\x01\x00\x00\x00"), [],
                x.AccountEntryExt(0),
            ))  # fmt: skip
        if key.type is t.TRUSTLINE:
            tl = key.trust_line
            g = StrKey.encode_ed25519_public_key(tl.account_id.account_id.ed25519.uint256)
            asset = _asset_of_tl(tl.asset)
            line = self.trustlines.get((g, asset))
            if line is None:
                return None
            return x.LedgerEntryData(t.TRUSTLINE, trust_line=x.TrustLineEntry(
                tl.account_id, tl.asset, x.Int64(line.balance), x.Int64(line.limit),
                x.Uint32(line.flags), x.TrustLineEntryExt(0),
            ))  # fmt: skip
        if key.type is t.CONTRACT_DATA:
            cd = key.contract_data
            contract = Address.from_xdr_sc_address(cd.contract).address
            if contract not in self.contracts:
                return None
            if cd.key.type is x.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE:
                val = x.SCVal(x.SCValType.SCV_VOID)
            elif cd.key.vec is not None and len(cd.key.vec.sc_vec) == 2:
                holder = Address.from_xdr_sc_address(cd.key.vec.sc_vec[1].address).address
                if (contract, holder) not in self.contract_balances:
                    return None
                val = _i128(self.contract_balances[(contract, holder)])
            else:
                return None
            return x.LedgerEntryData(t.CONTRACT_DATA, contract_data=x.ContractDataEntry(
                x.ExtensionPoint(0), cd.contract, cd.key, cd.durability, val,
            ))  # fmt: skip
        return None

    def get_events(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            page = params.get("pagination") or {}
            limit = min(int(page.get("limit") or 100), 10_000)
            cursor = page.get("cursor")
            oldest = self.oldest_ledger
            if cursor:
                after = str(cursor)
                if int(after.split("-", maxsplit=1)[0]) >> 32 < oldest:
                    raise RpcError(-32600, f"cursor is before the oldest ledger {oldest}")
                start, end = oldest, self.ledger + 1
            else:
                start = int(params.get("startLedger") or 0)
                end = int(params.get("endLedger") or self.ledger + 1)
                if not oldest <= start <= self.ledger:
                    raise RpcError(
                        -32600, f"startLedger must be between the oldest ledger: {oldest} and "
                        f"the latest ledger: {self.ledger}",
                    )  # fmt: skip
                after = f"{(start << 32) - 1:019d}-{10**10 - 1:010d}" if start else ""
            end = min(end, self.ledger + 1)
            filters = params.get("filters") or []
            found: list[_Event] = []
            for ev in self.events:
                if ev.id <= after or not start <= ev.ledger < end:
                    continue
                if filters and not any(_matches(f, ev) for f in filters):
                    continue
                found.append(ev)
                if len(found) == limit:
                    break
            if len(found) == limit:
                next_cursor = found[-1].id
            else:
                next_cursor = f"{(end << 32) - 1:019d}-{10**10 - 1:010d}"
            return {
                "events": [{
                    "type": "contract", "ledger": e.ledger,
                    "ledgerClosedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(e.close_time)),
                    "contractId": e.contract, "id": e.id, "operationIndex": e.op_index,
                    "transactionIndex": e.tx_index, "txHash": e.tx_hash,
                    "inSuccessfulContractCall": True, "topic": e.topics, "value": e.value,
                } for e in found],
                "latestLedger": self.ledger, "oldestLedger": oldest,
                "latestLedgerCloseTime": str(self.close_time),
                "oldestLedgerCloseTime": str(self.ledger_hashes[oldest][1]),
                "cursor": next_cursor,
            }  # fmt: skip

    def get_ledgers(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            page = params.get("pagination") or {}
            limit = min(int(page.get("limit") or 5), 200)
            start = int(params.get("startLedger") or self.oldest_ledger)
            if not self.oldest_ledger <= start <= self.ledger:
                raise RpcError(-32600, f"startLedger must be between {self.oldest_ledger} and "
                                       f"{self.ledger}")  # fmt: skip
            seqs = list(range(start, min(self.ledger, start + limit - 1) + 1))
            return {
                "ledgers": [{"hash": self.ledger_hashes[s][0].hex(), "sequence": s,
                             "ledgerCloseTime": str(self.ledger_hashes[s][1]),
                             "headerXdr": "", "metadataXdr": ""} for s in seqs],
                "latestLedger": self.ledger, "latestLedgerCloseTime": self.close_time,
                "oldestLedger": self.oldest_ledger,
                "oldestLedgerCloseTime": self.ledger_hashes[self.oldest_ledger][1],
                "cursor": str(seqs[-1]) if seqs else str(start),
            }  # fmt: skip

    # -- JSON-RPC ---------------------------------------------------------------------------
    def call(self, method: str, params: Any) -> Any:
        p = params or {}
        if method == "getHealth":
            with self.lock:
                return {"status": "healthy", "latestLedger": self.ledger,
                        "oldestLedger": self.oldest_ledger,
                        "ledgerRetentionWindow": self.retention_ledgers}  # fmt: skip
        if method == "getNetwork":
            return {"passphrase": self.passphrase, "protocolVersion": PROTOCOL}
        if method == "getLatestLedger":
            with self.lock:
                return {"id": self.ledger_hashes[self.ledger][0].hex(), "protocolVersion": PROTOCOL,
                        "sequence": self.ledger, "closeTime": str(self.close_time),
                        "headerXdr": "", "metadataXdr": ""}  # fmt: skip
        if method == "getLedgers":
            return self.get_ledgers(p)
        if method == "getLedgerEntries":
            return self.ledger_entries(list(p.get("keys") or []))
        if method == "simulateTransaction":
            return self.simulate(p["transaction"])
        if method == "sendTransaction":
            return self.send(p["transaction"])
        if method == "getTransaction":
            return self.get_transaction(p["hash"])
        if method == "getEvents":
            return self.get_events(p)
        if method == "standin_closeLedger":
            at = p.get("closeTime")
            return {
                "sequence": self.close_ledger(
                    int(p.get("count", 1)), now=None if at is None else int(at)
                )
            }
        if method == "standin_fault":
            kind = Fault(p["kind"])
            self.inject(kind, count=int(p.get("count", 1)),
                        **{k: v for k, v in p.items() if k not in ("kind", "count")})  # fmt: skip
            return {"queued": len(self.faults)}
        if method == "standin_fund":
            self.fund(p["account"])
            return {"account": p["account"]}
        raise RpcError(-32601, f"method {method} not found")


def _matches(f: dict[str, Any], ev: _Event) -> bool:
    if f.get("type") not in (None, "contract"):
        return False
    if f.get("contractIds") and ev.contract not in f["contractIds"]:
        return False
    topic_sets = f.get("topics")
    if not topic_sets:
        return True
    for pattern in topic_sets:
        if pattern and pattern[-1] == "**":
            head = pattern[:-1]
            if len(ev.topics) < len(head):
                continue
        else:
            head = pattern
            if len(ev.topics) != len(head):
                continue
        if all(p in ("*", t) for p, t in zip(head, ev.topics, strict=False)):
            return True
    return False


def _asset_of_x(asset: x.Asset) -> AssetKey:
    if asset.alpha_num4 is not None:
        a4 = asset.alpha_num4
        return (a4.asset_code.asset_code4.rstrip(b"\0").decode(),
                StrKey.encode_ed25519_public_key(a4.issuer.account_id.ed25519.uint256))  # fmt: skip
    if asset.alpha_num12 is not None:
        a12 = asset.alpha_num12
        return (a12.asset_code.asset_code12.rstrip(b"\0").decode(),
                StrKey.encode_ed25519_public_key(a12.issuer.account_id.ed25519.uint256))  # fmt: skip
    raise _CallFailed("the native asset has no issuer")


def _asset_of(line: x.ChangeTrustAsset) -> AssetKey:
    return _asset_of_x(x.Asset(line.type, alpha_num4=line.alpha_num4, alpha_num12=line.alpha_num12))


def _asset_of_tl(asset: x.TrustLineAsset) -> AssetKey:
    return _asset_of_x(x.Asset(asset.type, alpha_num4=asset.alpha_num4,
                               alpha_num12=asset.alpha_num12))  # fmt: skip


def _op_result(
    kind: x.OperationType, *, ok: bool, skipped: bool = False, retval_hash: bytes = b""
) -> x.OperationResult:
    t = x.OperationType
    if kind is t.INVOKE_HOST_FUNCTION:
        code = x.InvokeHostFunctionResultCode
        inner = x.InvokeHostFunctionResult(
            code.INVOKE_HOST_FUNCTION_SUCCESS if ok else code.INVOKE_HOST_FUNCTION_TRAPPED,
            success=x.Hash(hashlib.sha256(retval_hash).digest()) if ok else None,
        )
        tr = x.OperationResultTr(kind, invoke_host_function_result=inner)
    elif kind is t.PAYMENT:
        c = x.PaymentResultCode
        tr = x.OperationResultTr(kind, payment_result=x.PaymentResult(
            c.PAYMENT_SUCCESS if ok else c.PAYMENT_NOT_AUTHORIZED))  # fmt: skip
    elif kind is t.CHANGE_TRUST:
        c2 = x.ChangeTrustResultCode
        tr = x.OperationResultTr(kind, change_trust_result=x.ChangeTrustResult(
            c2.CHANGE_TRUST_SUCCESS if ok else c2.CHANGE_TRUST_NO_ISSUER))  # fmt: skip
    elif kind is t.CREATE_ACCOUNT:
        c3 = x.CreateAccountResultCode
        tr = x.OperationResultTr(kind, create_account_result=x.CreateAccountResult(
            c3.CREATE_ACCOUNT_SUCCESS if ok else c3.CREATE_ACCOUNT_ALREADY_EXIST))  # fmt: skip
    elif kind is t.SET_OPTIONS:
        c4 = x.SetOptionsResultCode
        tr = x.OperationResultTr(kind, set_options_result=x.SetOptionsResult(
            c4.SET_OPTIONS_SUCCESS if ok else c4.SET_OPTIONS_BAD_FLAGS))  # fmt: skip
    elif kind is t.SET_TRUST_LINE_FLAGS:
        c5 = x.SetTrustLineFlagsResultCode
        tr = x.OperationResultTr(kind, set_trust_line_flags_result=x.SetTrustLineFlagsResult(
            c5.SET_TRUST_LINE_FLAGS_SUCCESS if ok else c5.SET_TRUST_LINE_FLAGS_NO_TRUST_LINE))  # fmt: skip
    else:
        return x.OperationResult(x.OperationResultCode.opNOT_SUPPORTED)
    return x.OperationResult(x.OperationResultCode.opINNER, tr=tr)


# -- HTTP -------------------------------------------------------------------------------------


def make_app(standin: StandIn) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        with standin.lock:
            down = bool(standin.faults) and standin.faults[0][0] is Fault.RPC_DOWN
            if down:
                standin.faults.pop(0)
        if down:
            return web.Response(status=503, text="stand-in: injected outage")
        rid = body.get("id")
        try:
            result = standin.call(body.get("method", ""), body.get("params"))
        except RpcError as exc:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": exc.code, "message": exc.message}}
            )
        except _Refused as exc:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": -32600, "message": str(exc)}}
            )
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/", handle)
    return app


@dataclass
class Served:
    standin: StandIn
    url: str
    stop: Callable[[], None]


def serve_in_thread(standin: StandIn, *, port: int = 0, ledger_interval_s: float = 0.0) -> Served:
    """Serve ``standin`` on 127.0.0.1 from a daemon thread; with ``ledger_interval_s`` > 0 it
    closes a ledger (at the wall clock's time) that often."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(make_app(standin), access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", port)
        loop.run_until_complete(site.start())
        box["port"] = site._server.sockets[0].getsockname()[1]
        box["loop"] = loop

        async def closer() -> None:
            while True:
                await asyncio.sleep(ledger_interval_s)
                standin.close_ledger(now=int(time.time()))

        if ledger_interval_s > 0:
            box["closer"] = loop.create_task(closer())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="soroban-standin", daemon=True)
    thread.start()
    ready.wait(10)
    loop: asyncio.AbstractEventLoop = box["loop"]

    def halt() -> None:
        if "closer" in box:
            box["closer"].cancel()
        loop.stop()

    def stop() -> None:
        loop.call_soon_threadsafe(halt)
        thread.join(5)

    return Served(standin, f"http://127.0.0.1:{box['port']}/", stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--ledger-interval", type=float, default=5.0)
    parser.add_argument("--passphrase", default=StandIn().passphrase)
    ns = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    standin = StandIn(ns.passphrase)
    served = serve_in_thread(standin, port=ns.port, ledger_interval_s=ns.ledger_interval)
    print(json.dumps({"url": served.url, "passphrase": standin.passphrase,
                      "test_double": True}), flush=True)  # fmt: skip
    log.warning("Soroban RPC stand-in (a TEST DOUBLE, not a Stellar network) at %s", served.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        served.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
