"""Offline spending: device keys, allowances (a hold bound to a device key) and the batch
redemption of the vouchers devices sign offline.

- The issuer key (GET ``/issuer``): what payee terminals pin to check allowance certificates
  offline. Any authenticated caller.
- Devices and allowances: a USER registers their own device keys and reserves and releases
  their own allowances; reads: the USER themselves, staff readers name ``user_id``. A device
  key is revoked by its owner or by staff (admin, ops).
- Redemptions: a USER redeems vouchers paid to them; every voucher gets its own outcome
  (HONOURED, or REFUSED with a stable code); reads: payer and payee, staff readers.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import ADMIN, EVERYONE, OPS, USER, allow
from api.context import Ctx
from api.controllers.vaults import MAX_ID, UserParam, viewer
from api.idempotency import Attempt
from api.schemas.offline import (
    AllowanceCreate,
    AllowancePageRead,
    AllowanceRead,
    DeviceCreate,
    DeviceRead,
    DeviceRevokeCreate,
    IssuerRead,
    RedeemCreate,
    RedeemRead,
    ReleaseCreate,
    VoucherOutcomeRead,
    VoucherPageRead,
    VoucherRead,
)
from core.errors import ValidationError
from core.offline import Allowance, Device, Redemption, StoredVoucher, VoucherStatus
from core.offline.redemptions import Role as VoucherRole

AllowanceId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
DeviceId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
READ = [allow(EVERYONE, scope="read")]
OWNER = [allow({USER}, scope="payments")]
OWNER_OR_STAFF = [allow({USER, ADMIN, OPS}, scope="payments")]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str, field: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"{field} is not base64url", field=field) from exc


def device_read(d: Device) -> DeviceRead:
    return DeviceRead(d.id, b64(d.public_key), d.name, d.status, d.created_at, d.revoked_at)


async def allowance_read(ctx: Ctx, a: Allowance) -> AllowanceRead:
    return AllowanceRead(
        id=a.id,
        user_id=a.user_id,
        device_id=a.device_id,
        device_key=b64(a.device_key),
        account_id=a.account_id,
        asset=a.asset,
        amount=await ctx.svc.fmt(a.amount, a.asset),
        claimed=await ctx.svc.fmt(a.claimed, a.asset),
        expires_at=a.expires_at,
        hold_id=a.hold_id,
        status=a.status,
        final_cumulative=a.final_cumulative,
        certificate=a.certificate,
        created_at=a.created_at,
    )


async def redemption_read(ctx: Ctx, r: Redemption) -> VoucherOutcomeRead:
    amount = None
    if r.amount is not None and r.asset is not None:
        amount = await ctx.svc.fmt(r.amount, r.asset)
    return VoucherOutcomeRead(
        r.index, r.status, r.allowance_id, r.counter, r.asset, amount, r.code, r.message,
        r.operation_id, r.replayed,
    )  # fmt: skip


async def voucher_read(ctx: Ctx, v: StoredVoucher) -> VoucherRead:
    return VoucherRead(
        v.id, v.allowance_id, v.payer_id, v.payee_id, v.counter, v.asset,
        await ctx.svc.fmt(v.amount, v.asset), await ctx.svc.fmt(v.cumulative, v.asset),
        v.status, v.code, v.operation_id, v.created_at, v.updated_at,
    )  # fmt: skip


def _who(ctx: Ctx, user_id: Any) -> Any:
    who = viewer(ctx, user_id)
    if who is None:
        raise ValidationError("staff name the user whose records to list", field="user_id")
    return who


class OfflineController(Controller):
    path = "/api/v1/offline"
    tags = ["offline"]

    @get("/issuer", guards=READ)
    async def issuer(self, ctx: NamedDependency[Ctx]) -> IssuerRead:
        """The public key that signs allowance certificates."""
        return IssuerRead(b64(ctx.svc.offline.issuer.public_key))

    @post("/devices", guards=OWNER)
    async def register_device(
        self, ctx: NamedDependency[Ctx], data: JSONBody[DeviceCreate]
    ) -> Response[DeviceRead]:
        """Register a device's Ed25519 key (with its proof of possession)."""

        async def run(_: Attempt) -> DeviceRead:
            device = await ctx.svc.offline.devices.register(
                ctx.principal.user_id, ctx.actor,
                public_key=unb64(data.public_key, "public_key"),
                proof=unb64(data.proof, "proof"), name=data.name,
            )  # fmt: skip
            return device_read(device)

        return await ctx.once(data, run)

    @get("/devices", guards=READ)
    async def list_devices(
        self, ctx: NamedDependency[Ctx], user_id: UserParam = None
    ) -> list[DeviceRead]:
        devices = await ctx.svc.offline.devices.list(_who(ctx, user_id))
        return [device_read(d) for d in devices]

    @post("/devices/{device_id:int}/revoke", guards=OWNER_OR_STAFF, status_code=200)
    async def revoke_device(
        self, ctx: NamedDependency[Ctx], device_id: DeviceId, data: JSONBody[DeviceRevokeCreate]
    ) -> Response[DeviceRead]:
        """Revoke a device key: no allowance is bound to it any more (DEVICE_REVOKED). The
        allowances it already has stay: vouchers it signed against them are honoured, within
        each, until it expires or the device releases it (a voucher carries no signing time).
        Revoking a revoked key answers it unchanged."""

        async def run(_: Attempt) -> DeviceRead:
            owner = ctx.principal.user_id if ctx.is_user else None
            device = await ctx.svc.offline.devices.revoke(
                owner, ctx.actor, device_id, reason=data.reason
            )
            return device_read(device)

        return await ctx.once(data, run, status_code=200)

    @post("/allowances", guards=OWNER)
    async def open_allowance(
        self, ctx: NamedDependency[Ctx], data: JSONBody[AllowanceCreate]
    ) -> Response[AllowanceRead]:
        """Reserve an amount of your AVAILABLE account for a device's offline vouchers (a
        hold until ``expires_in``). A retry under the same Idempotency-Key answers the same
        allowance (its expiry is fixed at the first attempt)."""

        async def pin() -> dict[str, Any]:
            deadline = await ctx.svc.payments.deadline(timedelta(seconds=data.expires_in))
            return {"expires_at": deadline.isoformat()}

        async def run(a: Attempt) -> AllowanceRead:
            opened = await ctx.svc.offline.allowances.open(
                ctx.principal.user_id, ctx.actor, account_id=data.from_account_id,
                device_id=data.device_id, amount=data.amount,
                expires_at=datetime.fromisoformat(a.pinned["expires_at"]),
                idempotency_key=a.core_key,
            )  # fmt: skip
            return await allowance_read(ctx, opened)

        return await ctx.once(data, run, pin=pin)

    @get("/allowances", guards=READ)
    async def list_allowances(
        self,
        ctx: NamedDependency[Ctx],
        user_id: UserParam = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> AllowancePageRead:
        """Your allowances (staff: ``user_id``'s), newest first."""
        page = await ctx.svc.offline.allowances.list(
            _who(ctx, user_id), before_id=cursor, limit=limit
        )
        return AllowancePageRead(
            [await allowance_read(ctx, a) for a in page.allowances], page.next_cursor
        )

    @get("/allowances/{allowance_id:int}", guards=READ)
    async def get_allowance(
        self, ctx: NamedDependency[Ctx], allowance_id: AllowanceId
    ) -> AllowanceRead:
        owner = ctx.principal.user_id if ctx.is_user else None
        return await allowance_read(ctx, await ctx.svc.offline.allowances.get(owner, allowance_id))

    @post("/allowances/{allowance_id:int}/release", guards=OWNER, status_code=200)
    async def release(
        self, ctx: NamedDependency[Ctx], allowance_id: AllowanceId, data: JSONBody[ReleaseCreate]
    ) -> Response[AllowanceRead]:
        """Return the unspent rest now. Signed by the device with the last cumulative total it
        issued; refused (VOUCHERS_OUTSTANDING) until vouchers up to it are redeemed."""

        async def run(_: Attempt) -> AllowanceRead:
            released = await ctx.svc.offline.allowances.release(
                ctx.principal.user_id, ctx.actor, allowance_id=allowance_id,
                final_cumulative=data.final_cumulative,
                signature=unb64(data.signature, "signature"),
            )  # fmt: skip
            return await allowance_read(ctx, released)

        return await ctx.once(data, run, status_code=200)

    @post("/redemptions", guards=OWNER, status_code=200)
    async def redeem(
        self, ctx: NamedDependency[Ctx], data: JSONBody[RedeemCreate]
    ) -> Response[RedeemRead]:
        """Redeem vouchers paid to you: each is captured against its allowance exactly once
        and answered on its own (HONOURED or REFUSED with a stable code). Presenting a
        voucher again answers its stored outcome."""

        async def run(_: Attempt) -> RedeemRead:
            done = await ctx.svc.offline.redemptions.redeem(
                ctx.principal.user_id, ctx.actor, list(data.vouchers)
            )
            results = [await redemption_read(ctx, r) for r in done]
            return RedeemRead(
                results,
                sum(1 for r in done if r.status is VoucherStatus.HONOURED),
                sum(1 for r in done if r.status is VoucherStatus.REFUSED),
            )

        return await ctx.once(data, run, status_code=200)

    @get("/redemptions", guards=READ)
    async def list_redemptions(
        self,
        ctx: NamedDependency[Ctx],
        user_id: UserParam = None,
        role: Annotated[
            VoucherRole | None,
            QueryParameter(description="payee: paid to you; payer: from your allowances"),
        ] = None,
        allowance_id: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        cursor: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> VoucherPageRead:
        """Redeemed vouchers, newest first."""
        page = await ctx.svc.offline.redemptions.list(
            _who(ctx, user_id), role=role, allowance_id=allowance_id, before_id=cursor,
            limit=limit,
        )  # fmt: skip
        return VoucherPageRead(
            [await voucher_read(ctx, v) for v in page.vouchers], page.next_cursor
        )


ROUTES = [OfflineController]
