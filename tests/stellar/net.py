"""A Stellar network for the tests: the Soroban RPC stand-in (a test double) with an issuer
whose asset's SAC is deployed by real transactions, channel accounts, and users."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from stellar_sdk import Account, Address, Asset, Keypair, TransactionBuilder, scval
from stellar_sdk.operation.set_trust_line_flags import TrustLineFlags

from chain.stellar.client import StellarClient
from chain.stellar.deploy import deploy_asset, submit
from chain.stellar.standin import Served, StandIn


@dataclass
class StellarNet:
    served: Served
    client: StellarClient
    issuer: Keypair
    channels: list[Keypair]
    code: str
    contract: str = ""
    users: list[Keypair] = field(default_factory=list)

    @property
    def standin(self) -> StandIn:
        return self.served.standin

    @property
    def passphrase(self) -> str:
        return self.standin.passphrase

    @property
    def asset(self) -> Asset:
        return Asset(self.code, self.issuer.public_key)

    async def tick(self) -> None:
        self.standin.close_ledger()

    async def deploy(self) -> str:
        self.contract = await deploy_asset(self.client, self.issuer, self.code, self.tick)
        return self.contract

    async def classic(self, kp: Keypair, build: Callable[[TransactionBuilder], object]) -> None:
        seq = await self.client.account_seq(kp.public_key)
        assert seq is not None
        builder = TransactionBuilder(Account(kp.public_key, seq), self.passphrase, 100)
        build(builder.set_timeout(60))
        tx = builder.build()
        tx.sign(kp)
        await submit(self.client, tx.to_xdr(), tx.hash(), self.tick)

    async def user(self, *, trust: bool = True) -> Keypair:
        kp = Keypair.random()
        self.standin.fund(kp.public_key)
        if trust:
            await self.classic(kp, lambda b: b.append_change_trust_op(self.asset))
        self.users.append(kp)
        return kp

    async def deauthorize(self, kp: Keypair) -> None:
        await self.classic(
            self.issuer,
            lambda b: b.append_set_trust_line_flags_op(
                kp.public_key, self.asset, clear_flags=TrustLineFlags.AUTHORIZED_FLAG
            ),
        )

    async def burn(self, kp: Keypair, amount: int) -> bytes:
        """SAC ``burn(from, amount)`` signed by the holder; the transaction hash."""
        seq = await self.client.account_seq(kp.public_key)
        assert seq is not None
        tx = (
            TransactionBuilder(Account(kp.public_key, seq), self.passphrase, 100)
            .set_timeout(60)
            .append_invoke_contract_function_op(
                self.contract,
                "burn",
                [Address(kp.public_key).to_xdr_sc_val(), scval.to_int128(amount)],
            )
            .build()
        )
        prepared = await self.client.server.prepare_transaction(tx)
        prepared.sign(kp)
        await submit(self.client, prepared.to_xdr(), prepared.hash(), self.tick)
        return prepared.hash()

    async def pay_issuer(self, kp: Keypair, amount_text: str) -> None:
        await self.classic(
            kp, lambda b: b.append_payment_op(self.issuer.public_key, self.asset, amount_text)
        )


def make_net(code: str, *, channels: int = 2, **standin: object) -> StellarNet:
    from chain.stellar.standin import serve_in_thread

    # a network of its own per test: its chain id (from the passphrase) isolates the ledger side
    standin.setdefault("passphrase", f"Value OS stand-in {uuid.uuid4()} ; a test double")
    served = serve_in_thread(StandIn(**standin))  # type: ignore[arg-type]
    issuer = Keypair.random()
    keys = [Keypair.random() for _ in range(channels)]
    for kp in (issuer, *keys):
        served.standin.fund(kp.public_key)
    client = StellarClient(served.url, served.standin.passphrase)
    return StellarNet(served, client, issuer, keys, code)
