"""Read-through caches of the ledger's immutable reference data: asset scales, account
identities (owner, asset, kind), wallet compartment ids and system accounts; and amounts
parsed and formatted at an asset's scale. Balances and statuses are never cached."""

from __future__ import annotations

import uuid

from core.accounts import Account, Asset
from core.errors import InvalidAmount, UnknownUser, UserSuspended
from core.ledger import Ledger
from core.money import format_amount, parse_amount
from core.types import AccountKind, Actor, SystemAccount


class Directory:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._assets: dict[str, Asset] = {}
        self._accounts: dict[int, Account] = {}
        self._wallets: dict[tuple[uuid.UUID, str], dict[AccountKind, int]] = {}
        self._system: dict[tuple[str, SystemAccount], int] = {}

    # Assets, account identity (owner, asset, kind) and wallet ids never change once
    # created, so caching them is safe; balances and statuses are always read fresh.
    async def asset(self, code: str) -> Asset:
        found = self._assets.get(code)
        if found is None:
            found = self._assets[code] = await self.ledger.accounts.get_asset(code)
        return found

    async def account(self, account_id: int) -> Account:
        found = self._accounts.get(account_id)
        if found is None:
            found = await self.ledger.accounts.get_account(account_id)
            if len(self._accounts) > 100_000:
                self._accounts.clear()
            self._accounts[account_id] = found
        return found

    async def wallet(self, owner: uuid.UUID, asset: str, actor: Actor) -> dict[AccountKind, int]:
        found = self._wallets.get((owner, asset))
        if found is None:
            await self.asset(asset)
            found = await self.ledger.accounts.ensure_wallet(owner, asset, actor=actor)
            if len(self._wallets) > 100_000:
                self._wallets.clear()
            self._wallets[(owner, asset)] = found
        return found

    async def recipient(
        self, owner: uuid.UUID, asset: str, actor: Actor, *, suspended_ok: bool = False
    ) -> dict[AccountKind, int]:
        """The wallet of a user value is about to be paid to: UNKNOWN_ASSET, UNKNOWN_USER,
        or USER_SUSPENDED (409; ``suspended_ok``: a deposit, which lands BLOCKED anyway)
        before any account is opened. The status is read every time (it changes)."""
        await self.asset(asset)
        status = await self.ledger.accounts.user_status(owner)
        if status is None:
            raise UnknownUser(f"user {owner} does not exist", user_id=str(owner))
        if status != "ACTIVE" and not suspended_ok:
            raise UserSuspended(f"user {owner} is suspended", user_id=str(owner))
        return await self.wallet(owner, asset, actor)

    async def system(self, asset: str, code: SystemAccount, actor: Actor) -> int:
        found = self._system.get((asset, code))
        if found is None:
            await self.asset(asset)
            found = self._system[(asset, code)] = await self.ledger.accounts.system_account(
                asset, code, actor=actor
            )
        return found

    async def parse(self, text: str, asset: str, field: str = "amount") -> int:
        """A positive amount of ``asset`` from its decimal string (422 naming ``field``)."""
        units = parse_amount(text, (await self.asset(asset)).scale, field=field)
        if units <= 0:
            raise InvalidAmount(f"{field} must be positive", field=field)
        return units

    async def fmt(self, units: int, asset: str) -> str:
        return format_amount(units, (await self.asset(asset)).scale)
