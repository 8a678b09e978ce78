"""Bodies of the Stellar bridge endpoints (a bridge-out answers the ERC-20 bridge's
``BridgeOutRead``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, AssetCode, Create
from core.bridges.erc20 import BridgeOutOrder

StellarAddress = Annotated[
    str,
    Meta(
        pattern=r"^[GC][A-Z2-7]{55}$",
        description="a Stellar account (G...) or contract (C...) address; muxed (M...) refused",
        examples=["GBRPYHIL2CI3FNQ4BXLFMNDLFJUNPU2HY3ZMFSHONUCEOASW7QC7OX2H"],
    ),
]
Account = Annotated[str, Meta(pattern=r"^G[A-Z2-7]{55}$", description="a Stellar account")]
Contract = Annotated[str, Meta(pattern=r"^C[A-Z2-7]{55}$", description="a Stellar contract")]


class StellarBridgeOutCreate(Create):
    """Bridge ``amount`` of ``asset`` to ``to_address``: an account with an authorized
    trustline to the asset, or a contract."""

    asset: AssetCode
    amount: Amount
    to_address: StellarAddress

    def order(self) -> BridgeOutOrder:
        return BridgeOutOrder(self.asset, self.amount, self.to_address)


class StellarTokenCreate(Create):
    """Record an asset's Stellar Asset Contract (deployed by ``valueos deploy-stellar-asset``)
    on the API's network (``STELLAR_NETWORK_PASSPHRASE``)."""

    asset: AssetCode
    asset_code: Annotated[str, Meta(pattern=r"^[A-Za-z0-9]{1,12}$")]
    issuer: Account
    contract: Contract


class StellarTokenRead(Struct):
    asset: str
    chain_id: int
    contract: str
    asset_code: str
    issuer: str
    paused: bool
    pause_reason: str | None


class LinkChallengeCreate(Create):
    address: Account


class LinkChallengeRead(Struct):
    challenge_id: uuid.UUID
    address: str
    #: sign exactly this text with the address's key (SEP-53 signed message)
    challenge: str
    expires_at: datetime


class LinkCreate(Create):
    challenge_id: uuid.UUID
    #: the SEP-53 signature of the challenge, base64
    signature: Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{86}==$")]


class LinkRead(Struct):
    address: str
    user_id: uuid.UUID
    linked_at: datetime
