"""What the controllers share: the ledger facade and its reference data
(:class:`core.directory.Directory`), the use cases, credentials, and the idempotency records
writer."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from web3 import AsyncWeb3
from web3.exceptions import Web3Exception

from api.settings import ApiSettings
from chain.evm.client import connect
from chain.stellar.client import Destinations, StellarClient
from core.bridges.erc20 import BridgeOuts
from core.bridges.stellar import StellarBridgeOuts
from core.credentials import Credentials
from core.credits import Credits
from core.directory import Directory
from core.flows import SagaFlows
from core.ledger import Ledger
from core.offline import Issuer, Offline
from core.payments import Payments
from core.request_records import Records
from core.risk.desk import CreditDesk
from core.risk.price_signing import PriceSigners
from core.settings import epoch_settings

log = logging.getLogger(__name__)


class Services(Directory):
    def __init__(self, ledger: Ledger, settings: ApiSettings) -> None:
        super().__init__(ledger)
        self.settings = settings
        self.credentials = Credentials(ledger.engine)
        self.payments = Payments(self)
        self.credits = Credits(self)
        self.sagas = SagaFlows(self)
        self.bridge_outs = BridgeOuts(self)
        self.offline = Offline(
            self, Issuer(settings.offline_issuer_seed or secrets.token_bytes(32))
        )
        if not settings.price_signers:
            log.warning(
                "no price signers configured (VALUEOS_PRICE_SIGNERS): "
                "POST /api/v1/risk/prices refuses every round"
            )
        self.credit_desk = CreditDesk(
            self, PriceSigners(settings.price_signers, epoch_settings().ledger_id)
        )
        self.stellar: StellarClient | None = (
            StellarClient(settings.stellar_rpc_url, settings.stellar_passphrase)
            if settings.stellar_rpc_url and settings.stellar_passphrase
            else None
        )
        self.stellar_outs = StellarBridgeOuts(
            self, Destinations(self.stellar) if self.stellar is not None else None
        )
        #: the HTTP idempotency records, group-committed (``core.request_records.Records``)
        self.idempotency = Records.of(ledger.engine)
        self._chain: AsyncWeb3[Any] | None = (
            connect(settings.eth_rpc_url, timeout=5.0) if settings.eth_rpc_url else None
        )

    async def close(self) -> None:
        await self.idempotency.close()
        if self.stellar is not None:
            await self.stellar.close()
        if self._chain is not None:
            await self._chain.provider.disconnect()

    async def chain_head(self) -> int | None:
        """The chain's latest block number; None without ``ETH_RPC_URL`` or when the node does
        not answer (what needs it then shows nothing rather than failing)."""
        if self._chain is None:
            return None
        try:
            return int(await self._chain.eth.block_number)
        except (Web3Exception, OSError):
            return None
