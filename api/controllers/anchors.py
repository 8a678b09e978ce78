"""The auditor's side of anchoring: the anchored epochs, and proof bundles of an entry or of
an account's balance at an epoch (self-contained JSON that ``valueos verify`` checks offline
and against the contract).

AUDITOR, ADMIN, COMPLIANCE and READ_ONLY read any; a USER gets proofs of their own entries
and accounts only (others answer 404, like a nonexistent id). A bundle whose stored data no
longer matches the sealed root is refused with 500 LEDGER_INTEGRITY: a real alarm."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from api.auth import ADMIN, AUDITOR, COMPLIANCE, READ_ONLY, USER, allow
from api.context import Ctx
from api.schemas.anchors import AnchorListRead, AnchorRead, HistoryBundleRead, ProofBundleRead
from core import proofs
from core.errors import UnknownEntry

BigId = Annotated[int, PathParameter(ge=1, le=2**63 - 1)]
#: staff who may read every anchor and proof (OPS runs payments, not audits)
PROOF_READERS = frozenset({AUDITOR, ADMIN, COMPLIANCE, READ_ONLY})


class AnchorController(Controller):
    path = "/api/v1/anchors"
    tags = ["anchors"]

    @get("/", guards=[allow(PROOF_READERS, scope="read")])
    async def list_anchors(
        self,
        ctx: NamedDependency[Ctx],
        limit: Annotated[int, QueryParameter(ge=1, le=proofs.MAX_PAGE)] = 100,
        before_epoch: Annotated[int | None, QueryParameter(ge=1, le=2**63 - 1)] = None,
    ) -> AnchorListRead:
        """Sealed epochs with their roots, header and anchor (tx hash, block, status),
        newest first; the next page: ``before_epoch=<next_cursor>``."""
        found = await proofs.list_anchors(ctx.svc.ledger, limit=limit, before_epoch=before_epoch)
        anchors = msgspec.convert(found, list[AnchorRead])
        last = anchors[-1].epoch if anchors else None
        more = len(anchors) == limit and last is not None and last > 1
        return AnchorListRead(anchors, last if more else None)


class ProofController(Controller):
    path = "/api/v1/proofs"
    tags = ["anchors"]

    @get("/entries/{seq:int}", guards=[allow(PROOF_READERS | {USER}, scope="read")])
    async def entry_proof(self, ctx: NamedDependency[Ctx], seq: BigId) -> ProofBundleRead:
        """The proof bundle of one ledger entry against its epoch's ``entriesRoot``
        (409 EPOCH_NOT_SEALED while its epoch is open or not hashed yet)."""
        ledger = ctx.svc.ledger
        if ctx.is_user:
            account_id = await proofs.entry_account(ledger, seq)
            if account_id is None or not ctx.owns(await ctx.svc.account(account_id)):
                raise UnknownEntry(f"entry {seq} does not exist", seq=seq)
        bundle = await proofs.entry_proof_bundle(ledger, seq)
        return msgspec.convert(bundle, ProofBundleRead)

    @get("/balances/{account_id:int}", guards=[allow(PROOF_READERS | {USER}, scope="read")])
    async def balance_proof(
        self,
        ctx: NamedDependency[Ctx],
        account_id: BigId,
        epoch: Annotated[int, QueryParameter(ge=1, le=2**63 - 1)],
    ) -> ProofBundleRead:
        """The proof bundle of an account's balance at the end of ``epoch`` against that
        epoch's ``balancesRoot``."""
        await ctx.readable_account(account_id)
        bundle = await proofs.balance_proof_bundle(ctx.svc.ledger, account_id, epoch)
        return msgspec.convert(bundle, ProofBundleRead)

    @get("/history/{account_id:int}", guards=[allow(PROOF_READERS | {USER}, scope="read")])
    async def history(
        self,
        ctx: NamedDependency[Ctx],
        account_id: BigId,
        to_epoch: Annotated[int, QueryParameter(ge=1, le=2**63 - 1)],
        from_epoch: Annotated[int, QueryParameter(ge=0, le=2**63 - 1)] = 0,
    ) -> HistoryBundleRead:
        """An account's entries after ``from_epoch`` up to the end of ``to_epoch`` with the
        balance proof bundles at both ends (0: from the account's first entry); ``valueos
        verify`` proves none was omitted, added, reordered or altered (422 HISTORY_TOO_LONG
        for more than 10,000 entries: ask for pieces between sealed epochs; 422
        VALIDATION_ERROR for an end sealed before balance leaves carried an entry count)."""
        await ctx.readable_account(account_id)
        bundle = await proofs.history_bundle(ctx.svc.ledger, account_id, from_epoch, to_epoch)
        return msgspec.convert(bundle, HistoryBundleRead, from_attributes=False)


ROUTES = [AnchorController, ProofController]
