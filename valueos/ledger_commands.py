"""``valueos migrate | demo | reconcile``: the ledger core's commands."""

from __future__ import annotations

import argparse
import asyncio
import uuid

from sqlalchemy.engine import make_url

from core.db import migrate, resolve_url
from core.ledger import Ledger
from core.money import format_amount
from core.settings import database_settings
from core.types import AccountKind, Actor, AssetKind, OperationType, Role, SystemAccount

OPERATOR = Actor("valueos-cli", Role.ADMIN)


def _migrate() -> str:
    url = resolve_url(database_settings())
    migrate(url)
    return url


async def _demo() -> int:
    ledger = Ledger.connect()
    try:
        code = "DEMO" + uuid.uuid4().hex[:6].upper()
        await ledger.accounts.create_asset(
            code=code, name="demo miles", scale=2, kind=AssetKind.MILES, actor=OPERATOR
        )
        issuance = await ledger.accounts.system_account(
            code, SystemAccount.ISSUANCE, actor=OPERATOR
        )
        alice = await ledger.accounts.create_user(email=None, actor=OPERATOR)
        bob = await ledger.accounts.create_user(email=None, actor=OPERATOR)
        wa = await ledger.accounts.ensure_wallet(alice, code, actor=OPERATOR)
        wb = await ledger.accounts.ensure_wallet(bob, code, actor=OPERATOR)
        a, b = wa[AccountKind.AVAILABLE], wb[AccountKind.AVAILABLE]
        await ledger.transfer(
            source=issuance,
            destination=a,
            asset=code,
            amount=100_00,
            type_=OperationType.MINT,
            idempotency_key=f"{code}-mint",
        )
        await asyncio.gather(
            *(
                ledger.transfer(
                    source=a,
                    destination=b,
                    asset=code,
                    amount=1_25,
                    idempotency_key=f"{code}-pay-{i}",
                )
                for i in range(40)
            )
        )
        hold = await ledger.hold(source=a, destination=b, asset=code, amount=10_00)
        await ledger.capture(hold.hold_id, 7_50)
        for name, account in (("alice", a), ("bob", b), ("issuance", issuance)):
            bal = await ledger.queries.balance(account)
            print(f"{name:9} posted {format_amount(bal.posted, 2):>10} {code}")
        drifts = await ledger.reconcile()
        print(
            f"batches committed: {ledger.batcher.batches} for {ledger.batcher.commands} "
            f"commands; reconciler drifts: {len(drifts)}"
        )
        return 1 if drifts else 0
    finally:
        await ledger.close()


async def _reconcile() -> int:
    ledger = Ledger.connect()
    try:
        drifts = await ledger.reconcile()
        for d in drifts:
            print(f"DRIFT {d.subject} {d.id} {d.field}: entries say {d.expected}, found {d.found}")
        print(f"{len(drifts)} drift(s)")
        return 1 if drifts else 0
    finally:
        await ledger.close()


def main(command: str, argv: list[str]) -> int:
    argparse.ArgumentParser(prog=f"valueos {command}").parse_args(argv)
    url = _migrate()
    if command == "migrate":
        print(f"schema at head on database {make_url(url).database}")
        return 0
    if command == "demo":
        return asyncio.run(_demo())
    return asyncio.run(_reconcile())
