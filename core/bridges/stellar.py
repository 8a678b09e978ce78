"""Stellar bridge-out, the ledger side: the ERC-20 bridge's operation, accounts and settlement
with a Stellar Asset Contract (SAC) ``mint(to, amount)`` as the outbox row.

A bridge-out is the same BRIDGE_OUT operation (user AVAILABLE -> the asset's IN_FLIGHT) whose
mint is its outbox row (purpose ``sac_mint``, ref = the bridge id, ``to_address`` = the SAC,
``data`` = the XDR of the ``InvokeContractArgs``), ended by the same BRIDGE_OUT_FINAL or
BRIDGE_OUT_REFUND (:func:`core.bridges.erc20.settle_many`). Before anything is debited:

* the destination is a G-address (an ed25519 account) or a C-address (a contract); muxed
  accounts are refused;
* the asset's scale maps exactly onto the SAC's 7 decimals, and within the i64 of a
  trustline (:func:`stellar_units`);
* the destination can receive the asset now (an AUTHORIZED trustline, or an existing
  contract), asked of the network by the caller's :class:`DestinationCheck`.

Stellar's amounts and ids are derived here without I/O; the network is behind the check.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from stellar_sdk import Address, StrKey, scval
from stellar_sdk import xdr as sx

from core import audit
from core.bridges.erc20 import BridgeOutOrder, BridgeOuts, bridge_id_of
from core.bridges.tokens import to_token_units
from core.errors import (
    BridgePaused,
    Conflict,
    DestinationNotReady,
    InvalidAddress,
    UnknownBridgeToken,
    ValidationError,
)
from core.money import INT64_MAX
from core.storage_errors import translate
from core.types import (
    AccountKind,
    Actor,
    ChainIntent,
    OperationType,
    PostOperation,
    SystemAccount,
    transfer_legs,
)

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "DECIMALS",
    "MINT_PURPOSE",
    "DestinationCheck",
    "StellarBridgeOuts",
    "StellarToken",
    "check_stellar_address",
    "get_stellar_token",
    "mint_args",
    "register_stellar_token",
    "stellar_chain_id",
    "stellar_units",
]

MINT_PURPOSE = "sac_mint"
#: a SAC's amounts: i128 stroops, 7 decimals (a trustline holds an i64 of them)
DECIMALS = 7


def stellar_chain_id(passphrase: str) -> int:
    """The ``chain_id`` the ledger files a Stellar network under: the first 8 bytes of its
    network id (``sha256(passphrase)``), as a positive 63-bit integer."""
    return int.from_bytes(hashlib.sha256(passphrase.encode()).digest()[:8], "big") & INT64_MAX


def check_stellar_address(address: str, field: str = "to_address") -> str:
    """``address`` if it is a valid G- (account) or C- (contract) strkey, else INVALID_ADDRESS."""
    if StrKey.is_valid_ed25519_public_key(address) or StrKey.is_valid_contract(address):
        return address
    raise InvalidAddress("not a Stellar account (G...) or contract (C...) address", field=field)


def stellar_units(amount: int, scale: int) -> int:
    """``amount`` minor units as stroops (7 decimals), exactly and within a trustline's i64."""
    units = to_token_units(amount, scale, DECIMALS)
    if units > INT64_MAX:
        raise ValidationError(
            "the amount exceeds what a Stellar trustline can hold (i64 stroops)", field="amount"
        )
    return units


def mint_args(contract: str, to: str, amount: int) -> bytes:
    """XDR of the SAC call ``mint(to, amount)``: what the outbox row stands for."""
    return bytes(
        sx.InvokeContractArgs(
            Address(contract).to_xdr_sc_address(), sx.SCSymbol(b"mint"),
            [Address(to).to_xdr_sc_val(), scval.to_int128(amount)],
        ).to_xdr_bytes()
    )  # fmt: skip


def decode_mint_args(data: bytes) -> tuple[str, str, int]:
    """(contract, to, amount) of :func:`mint_args`' bytes."""
    call = sx.InvokeContractArgs.from_xdr_bytes(data)
    if call.function_name.sc_symbol != b"mint" or len(call.args) != 2:
        raise ValueError("not a SAC mint(to, amount)")
    return (
        Address.from_xdr_sc_address(call.contract_address).address,
        scval.from_address(call.args[0]).address,
        int(scval.from_int128(call.args[1])),
    )


@dataclass(frozen=True, slots=True)
class StellarToken:
    asset: str
    chain_id: int
    #: the SAC (C...)
    contract: str
    code: str
    issuer: str
    paused: bool
    pause_reason: str | None

    @property
    def sep11(self) -> str:
        """The asset as CAP-67 events name it: ``CODE:ISSUER``."""
        return f"{self.code}:{self.issuer}"


def _token(r: Any) -> StellarToken:
    return StellarToken(
        r.asset, r.chain_id, r.address, r.asset_code, r.issuer, r.paused, r.pause_reason
    )


async def get_stellar_token(ledger: Ledger, asset: str) -> StellarToken:
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM bridge_tokens WHERE asset = :a AND chain = 'stellar'"),
                {"a": asset},
            )
        ).first()
    if row is None:
        raise UnknownBridgeToken(f"asset {asset} has no Stellar asset contract", asset=asset)
    return _token(row)


async def stellar_tokens(ledger: Ledger, chain_id: int) -> list[StellarToken]:
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM bridge_tokens WHERE chain = 'stellar' AND chain_id = :c "
                 "ORDER BY asset"), {"c": chain_id},
        )  # fmt: skip
        return [_token(r) for r in rows]


async def register_stellar_token(
    ledger: Ledger, *, asset: str, passphrase: str, code: str, issuer: str, contract: str,
    actor: Actor,
) -> StellarToken:  # fmt: skip
    """Record ``asset``'s SAC (once per asset: CONFLICT)."""
    if not passphrase:
        raise ValidationError("no Stellar network is configured (its passphrase)", field="asset")
    await ledger.accounts.get_asset(asset)  # UNKNOWN_ASSET
    if not StrKey.is_valid_ed25519_public_key(issuer):
        raise InvalidAddress("the issuer must be an account (G...)", field="issuer")
    if not StrKey.is_valid_contract(contract):
        raise InvalidAddress("the SAC must be a contract address (C...)", field="contract")
    chain_id = stellar_chain_id(passphrase)
    async with ledger.engine.begin() as conn:
        try:
            row = (
                await conn.execute(
                    text(
                        "INSERT INTO bridge_tokens (asset, chain_id, address, decimals, chain, "
                        "asset_code, issuer) VALUES (:a, :c, :ad, 7, 'stellar', :code, :iss) "
                        "ON CONFLICT (asset) DO NOTHING RETURNING *"
                    ),
                    {"a": asset, "c": chain_id, "ad": contract, "code": code, "iss": issuer},
                )
            ).first()
        except DBAPIError as exc:
            raise translate(exc) from exc
        if row is None:
            raise Conflict(f"asset {asset} already has a bridge token", asset=asset)
        await audit.record(
            conn, actor, "bridge_token.registered", "bridge_token", asset,
            after={"chain": "stellar", "chain_id": chain_id, "contract": contract,
                   "asset_code": code, "issuer": issuer},
        )  # fmt: skip
    return _token(row)


class DestinationCheck(Protocol):
    """Why ``to`` cannot receive ``token`` now (None: it can), asked of the network."""

    async def __call__(self, token: StellarToken, to: str) -> str | None: ...


class StellarBridgeOuts(BridgeOuts):
    """:class:`core.bridges.erc20.BridgeOuts` whose mint is a SAC ``mint`` on Stellar."""

    def __init__(self, directory: Any, destination: DestinationCheck | None) -> None:
        super().__init__(directory)
        self.destination = destination

    async def plan(
        self, user: uuid.UUID, actor: Actor, order: BridgeOutOrder, *, key: str | None
    ) -> PostOperation:
        to = check_stellar_address(order.to_address)
        token = await get_stellar_token(self.ledger, order.asset)
        if token.paused:
            raise BridgePaused(
                f"bridging {order.asset} out is paused: {token.pause_reason}", asset=order.asset
            )
        asset = await self.directory.asset(order.asset)
        amount = await self.directory.parse(order.amount, order.asset)
        units = stellar_units(amount, asset.scale)
        if self.destination is None:
            raise DestinationNotReady(
                "the Stellar network is not configured: the destination cannot be checked",
                field="to_address",
            )
        why = await self.destination(token, to)
        if why is not None:
            raise DestinationNotReady(why, field="to_address")
        wallet = await self.directory.wallet(user, order.asset, actor)
        in_flight = await self.directory.system(order.asset, SystemAccount.IN_FLIGHT, actor)
        ref = bridge_id_of(key).hex()
        return PostOperation(
            OperationType.BRIDGE_OUT,
            transfer_legs(wallet[AccountKind.AVAILABLE], in_flight, order.asset, amount),
            actor,
            key,
            {"bridge": {"id": ref, "chain": "stellar", "chain_id": token.chain_id,
                        "token": token.contract, "to": to, "token_amount": str(units),
                        "user": str(user)}},
            chain_intent=ChainIntent(
                MINT_PURPOSE, ref, token.chain_id, token.contract,
                mint_args(token.contract, to, units),
            ),
        )  # fmt: skip
