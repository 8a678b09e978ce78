"""A payment provider stand-in: a **test double** of the external service that collects a
user's fiat repayment and reports the outcome on our webhook.

It does what the real provider's side of the contract says — sign the event with the shared
secret (HMAC-SHA256 over ``"<timestamp>.<raw body>"``), POST it to ``/api/v1/repayment/webhook``,
retry the same event id when asked — and keeps its own payout report (:attr:`payouts`), the
provider's view that :meth:`core.risk.repayments.Repayments.reconcile` checks the ledger
against. Nothing here moves money: it exists for tests, demos and local development only.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import httpx

from core.risk.loop import sign
from core.risk.repayments import ProviderPayout, RepaymentStatus

WEBHOOK_PATH = "/api/v1/repayment/webhook"


@dataclass
class PaymentProviderDouble:
    http: httpx.AsyncClient
    secret: str = field(repr=False)
    payouts: list[ProviderPayout] = field(default_factory=list)

    def event(self, repayment_id: uuid.UUID, amount: str, *, succeeded: bool,
              event_id: str | None = None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
        body = {
            "event_id": event_id or f"evt_{uuid.uuid4().hex}",
            "repayment_id": str(repayment_id),
            "status": "succeeded" if succeeded else "failed",
            "amount": amount,
        }
        raw = json.dumps(body).encode()
        stamp = str(int(time.time()))
        return raw, {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": sign(self.secret, stamp, raw),
            "Content-Type": "application/json",
        }

    async def collect(
        self, repayment_id: uuid.UUID, amount: str, minor: int, *, succeeded: bool = True,
        event_id: str | None = None,
    ) -> httpx.Response:  # fmt: skip
        """Collect the money (pretend), record the payout, call the webhook back."""
        status = RepaymentStatus.SUCCEEDED if succeeded else RepaymentStatus.FAILED
        self.payouts.append(ProviderPayout(str(repayment_id), minor, status))
        raw, headers = self.event(repayment_id, amount, succeeded=succeeded, event_id=event_id)
        return await self.http.post(WEBHOOK_PATH, content=raw, headers=headers)
