"""Stellar bridge-in, the ledger side: SAC ``burn`` events come back to the ledger through the
ERC-20 bridge's redemptions (:mod:`core.bridges.redemptions`), attributed by their ``from``.

Soroban transactions carry no memo, so a user links a Stellar account to their ledger user
first: :func:`link_challenge` issues a short-lived, single-use challenge naming the user and
the address, the wallet signs it with the account's key (SEP-53 signed message), and
:func:`link_address` verifies that signature before recording the link (audited). A forged or
replayed signature is refused (LINK_CHALLENGE_INVALID); an address links to one user.

A burn event (CAP-67 ``["burn", from, "CODE:ISSUER"]``, from a SAC ``burn`` or a payment to
the issuer) is recorded as a redemption keyed by (chain id, transaction hash, operation << 16 |
event index) with its event id; its ``ledgerRef`` is the linked user's AVAILABLE account of the
asset, or zero when ``from`` is linked to nobody -- then it is credited to the asset's SUSPENSE
account, audited, until staff resolve it (:func:`core.bridges.redemptions.resolve_suspense`).
Every ``mint`` event of the SAC is recorded too (``stellar_mint_events``), for the supply
invariant: the network's minted - burned must match what the ledger sent.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from stellar_sdk import Keypair, StrKey
from stellar_sdk.exceptions import BadSignatureError

from core import audit
from core.bridges.redemptions import record_redemptions
from core.bridges.stellar import StellarToken
from core.errors import AddressAlreadyLinked, InvalidAddress, LinkChallengeInvalid
from core.storage_errors import translate
from core.types import AccountKind, Actor

if TYPE_CHECKING:
    from core.ledger import Ledger

__all__ = [
    "CHALLENGE_TTL",
    "LinkChallenge",
    "SacEvent",
    "StellarLink",
    "event_supply",
    "link_address",
    "link_challenge",
    "list_links",
    "record_burns",
    "record_mints",
]

CHALLENGE_TTL = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class LinkChallenge:
    id: uuid.UUID
    address: str
    #: the exact text to sign (SEP-53 signed message)
    challenge: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class StellarLink:
    address: str
    user: uuid.UUID
    linked_at: datetime


async def link_challenge(
    ledger: Ledger, user: uuid.UUID, address: str, actor: Actor
) -> LinkChallenge:
    """A challenge for ``user`` to prove they hold ``address``'s key."""
    if not StrKey.is_valid_ed25519_public_key(address):
        raise InvalidAddress("only a Stellar account (G...) can be linked", field="address")
    cid = uuid.uuid4()
    async with ledger.engine.begin() as conn:
        expires = (
            await conn.execute(text("SELECT now() + :ttl"), {"ttl": CHALLENGE_TTL})
        ).scalar_one()
        challenge = (
            f"Value OS: link Stellar account {address} to user {user}. "
            f"Challenge {cid}, nonce {secrets.token_hex(16)}, valid until {expires.isoformat()}."
        )
        await conn.execute(
            text("INSERT INTO stellar_link_challenges (id, user_id, address, challenge, "
                 "expires_at) VALUES (:i, :u, :a, :c, :e)"),
            {"i": cid, "u": user, "a": address, "c": challenge, "e": expires},
        )  # fmt: skip
    return LinkChallenge(cid, address, challenge, expires)


async def link_address(
    ledger: Ledger, user: uuid.UUID, challenge_id: uuid.UUID, signature: bytes, actor: Actor
) -> StellarLink:
    """Link the challenge's address to ``user`` once its SEP-53 signature verifies."""
    async with ledger.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT *, expires_at < now() AS expired FROM stellar_link_challenges "
                    "WHERE id = :i FOR UPDATE"
                ),
                {"i": challenge_id},
            )
        ).first()
        if row is None or row.user_id != user or row.used_at is not None or row.expired:
            raise LinkChallengeInvalid(
                "the challenge is unknown, another user's, used or expired", field="challenge_id"
            )
        try:
            Keypair.from_public_key(row.address).verify_message(row.challenge, signature)
        except BadSignatureError as exc:
            raise LinkChallengeInvalid(
                f"the signature does not verify with {row.address}'s key", field="signature"
            ) from exc
        owner = (
            await conn.execute(
                text("SELECT user_id FROM stellar_links WHERE address = :a"), {"a": row.address}
            )
        ).scalar()
        if owner is not None and owner != user:
            raise AddressAlreadyLinked(f"{row.address} is linked to another user")
        await conn.execute(
            text("UPDATE stellar_link_challenges SET used_at = now() WHERE id = :i"),
            {"i": challenge_id},
        )
        try:
            await conn.execute(
                text("INSERT INTO stellar_links (address, user_id, challenge_id) "
                     "VALUES (:a, :u, :c) ON CONFLICT (address) DO NOTHING"),
                {"a": row.address, "u": user, "c": challenge_id},
            )  # fmt: skip
        except DBAPIError as exc:
            raise translate(exc) from exc
        await audit.record(
            conn, actor, "stellar.address_linked", "stellar_link", row.address,
            after={"user": str(user), "challenge": str(challenge_id)},
        )  # fmt: skip
        linked = (
            await conn.execute(
                text("SELECT * FROM stellar_links WHERE address = :a"), {"a": row.address}
            )
        ).one()
    return StellarLink(linked.address, linked.user_id, linked.linked_at)


async def list_links(ledger: Ledger, user: uuid.UUID) -> list[StellarLink]:
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM stellar_links WHERE user_id = :u ORDER BY linked_at"), {"u": user}
        )
        return [StellarLink(r.address, r.user_id, r.linked_at) for r in rows]


@dataclass(frozen=True, slots=True)
class SacEvent:
    """A SAC ``burn`` or ``mint`` event (the shape of :class:`chain.stellar.client.BurnEvent`
    plus its ledger's hash)."""

    id: str
    ledger: int
    ledger_hash: bytes
    tx_hash: bytes
    op_index: int
    event_index: int
    address: str
    amount: int


@dataclass(frozen=True, slots=True)
class _Burn:
    """A burn as :func:`core.bridges.redemptions.record_redemptions` takes it."""

    tx_hash: bytes
    log_index: int
    block_number: int
    block_hash: bytes
    sender: str
    amount: int
    ledger_ref: bytes


async def _ledger_ref(ledger: Ledger, token: StellarToken, sender: str, actor: Actor) -> bytes:
    """The linked user's AVAILABLE account of the asset (32 bytes), zero when unlinked."""
    async with ledger.engine.connect() as conn:
        user = (
            await conn.execute(
                text("SELECT user_id FROM stellar_links WHERE address = :a"), {"a": sender}
            )
        ).scalar()
    if user is None:
        return bytes(32)
    wallet = await ledger.accounts.ensure_wallet(user, token.asset, actor=actor)
    return wallet[AccountKind.AVAILABLE].to_bytes(32, "big")


async def record_burns(
    ledger: Ledger, token: StellarToken, burns: Sequence[SacEvent], actor: Actor
) -> int:
    """Record ``burns`` as redemptions (a burn already recorded is left as it is); returns how
    many were new."""
    page = [
        _Burn(b.tx_hash, (b.op_index << 16) | b.event_index, b.ledger, b.ledger_hash, b.address,
              b.amount, await _ledger_ref(ledger, token, b.address, actor))
        for b in burns
    ]  # fmt: skip
    new = await record_redemptions(ledger, token.chain_id, token.contract, page)
    async with ledger.engine.begin() as conn:
        for b, p in zip(burns, page, strict=True):
            await conn.execute(
                text("UPDATE bridge_redemptions SET event_id = :e WHERE chain_id = :c AND "
                     "tx_hash = :tx AND log_index = :li AND event_id IS NULL"),
                {"e": b.id, "c": token.chain_id, "tx": b.tx_hash, "li": p.log_index},
            )  # fmt: skip
    return new


async def record_mints(ledger: Ledger, token: StellarToken, mints: Sequence[SacEvent]) -> int:
    new = 0
    async with ledger.engine.begin() as conn:
        for m in mints:
            done = await conn.execute(
                text("INSERT INTO stellar_mint_events (event_id, chain_id, token, ledger, "
                     "tx_hash, to_address, amount) VALUES (:e, :c, :t, :l, :tx, :to, :a) "
                     "ON CONFLICT (chain_id, event_id) DO NOTHING"),
                {"e": m.id, "c": token.chain_id, "t": token.contract, "l": m.ledger,
                 "tx": m.tx_hash, "to": m.address, "a": Decimal(m.amount)},
            )  # fmt: skip
            new += done.rowcount
    return new


async def event_supply(ledger: Ledger, token: StellarToken, up_to_ledger: int) -> int:
    """Minted - burned by the SAC's events recorded up to ``up_to_ledger`` (stroops)."""
    async with ledger.engine.connect() as conn:
        minted = (
            await conn.execute(
                text(
                    "SELECT COALESCE(SUM(amount), 0) FROM stellar_mint_events "
                    "WHERE chain_id = :c AND token = :t AND ledger <= :l"
                ),
                {"c": token.chain_id, "t": token.contract, "l": up_to_ledger},
            )
        ).scalar_one()
        burned = (
            await conn.execute(
                text(
                    "SELECT COALESCE(SUM(amount), 0) FROM bridge_redemptions "
                    "WHERE chain_id = :c AND token = :t AND block_number <= :l"
                ),
                {"c": token.chain_id, "t": token.contract, "l": up_to_ledger},
            )
        ).scalar_one()
    return int(minted) - int(burned)
