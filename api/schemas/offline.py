"""Bodies of the offline endpoints: device keys, allowances, voucher redemption.

Keys and signatures travel as unpadded base64url; amounts as decimal strings in the asset's
scale, except inside signed messages (vouchers, a release's final total), which carry minor
units."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import Amount, Create, Label, Reason
from core.offline import AllowanceStatus, VoucherStatus
from core.offline.redemptions import MAX_BATCH

B64 = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", max_length=200)]
MaxId = Annotated[int, Meta(ge=1, le=2**63 - 1)]


class IssuerRead(Struct):
    #: the Ed25519 key that signs allowance certificates (pin it in payee terminals)
    public_key: str
    algorithm: str = "Ed25519"


class DeviceCreate(Create):
    #: the device's Ed25519 public key (32 bytes)
    public_key: B64
    #: the key's signature of "valueos/device/v1\\0" + user id (16 bytes) + public key
    proof: B64
    name: Label


class DeviceRead(Struct):
    id: int
    public_key: str
    name: str
    #: ACTIVE, or REVOKED (no new allowance; its open allowances still honour vouchers)
    status: str
    created_at: datetime
    revoked_at: datetime | None = None


class DeviceRevokeCreate(Create):
    reason: Reason | None = None


class AllowanceCreate(Create):
    from_account_id: MaxId
    device_id: MaxId
    amount: Amount
    #: seconds until the allowance expires (default 7 days, at most 90)
    expires_in: Annotated[int, Meta(ge=60, le=90 * 86400)] = 7 * 86400


class AllowanceRead(Struct):
    id: int
    user_id: uuid.UUID
    device_id: int
    device_key: str
    account_id: int
    asset: str
    amount: str
    #: claimed by vouchers so far
    claimed: str
    expires_at: datetime
    hold_id: int | None
    status: AllowanceStatus
    #: the device's declared last cumulative total (RELEASED), minor units
    final_cumulative: int | None
    #: issuer-signed certificate for payees' offline checks (``VC1.`` + base64url)
    certificate: str
    created_at: datetime


class AllowancePageRead(Struct):
    allowances: list[AllowanceRead]
    next_cursor: int | None


class ReleaseCreate(Create):
    #: the last cumulative total the device issued, in minor units (0: none)
    final_cumulative: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    #: the device's signature of "valueos/release/v1\\0" + allowance id + final_cumulative
    signature: B64


Voucher = Annotated[str, Meta(min_length=1, max_length=300)]


class RedeemCreate(Create):
    #: vouchers in their text form (``VV1.`` + base64url), redeemed in this order
    vouchers: Annotated[list[Voucher], Meta(min_length=1, max_length=MAX_BATCH)]


class VoucherOutcomeRead(Struct):
    #: position in the request
    index: int
    #: HONOURED: paid to you; REFUSED: see ``code``; CLAIMED: not finished, redeem it again
    status: VoucherStatus
    allowance_id: int | None
    counter: int | None
    asset: str | None
    amount: str | None
    code: str | None
    message: str | None
    operation_id: int | None
    #: this voucher had been presented before; this is its stored outcome
    replayed: bool


class RedeemRead(Struct):
    results: list[VoucherOutcomeRead]
    honoured: int
    refused: int


class VoucherRead(Struct):
    id: int
    allowance_id: int
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    counter: int
    asset: str
    amount: str
    cumulative: str
    status: VoucherStatus
    code: str | None
    operation_id: int | None
    created_at: datetime
    updated_at: datetime


class VoucherPageRead(Struct):
    vouchers: list[VoucherRead]
    next_cursor: int | None
