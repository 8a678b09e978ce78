"""What the controllers share: the ledger facade and its reference data
(:class:`core.directory.Directory`), the use cases, credentials, and the idempotency records
writer."""

from __future__ import annotations

from api.settings import ApiSettings
from core.bridges.erc20 import BridgeOuts
from core.credentials import Credentials
from core.directory import Directory
from core.ledger import Ledger
from core.payments import Payments
from core.request_records import Records


class Services(Directory):
    def __init__(self, ledger: Ledger, settings: ApiSettings) -> None:
        super().__init__(ledger)
        self.settings = settings
        self.credentials = Credentials(ledger.engine)
        self.payments = Payments(self)
        self.bridge_outs = BridgeOuts(self)
        #: the HTTP idempotency records, group-committed (``core.request_records.Records``)
        self.idempotency = Records.of(ledger.engine)

    async def close(self) -> None:
        await self.idempotency.close()
