"""A local mirror of accounts: entries pulled incrementally (newest first, down to the last
entry already held) and checked on arrival. Each entry's ``balance_after`` must equal the one
before it plus its amount, the first entry of an account starts from zero, and the mirrored
balance must equal the server's posted balance. A mismatch raises :class:`MirrorMismatch`;
nothing inconsistent is stored.

State lives in the store under ``mirror.<account id>``: the entries held (oldest first) as
``[seq, operation id, type, amount, balance_after, epoch]`` with amounts in minor units.

:meth:`Mirror.verify_balance` proves the mirror complete up to an epoch: the account's balance
leaf of that epoch (its bundle, checked against the balances root and, with a node, the
anchored header) commits to the account's entry count and the running hash of its entries;
the mirror's own entries must fold to exactly those, so a server that hid or invented an
entry (even with consistent ``balance_after`` values) is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from valueos_sdk.client import AsyncClient
from valueos_sdk.errors import MirrorMismatch
from valueos_sdk.models import HistoryEntryRead
from valueos_sdk.proofs import (
    LedgerIdentity,
    check_anchored,
    check_balance_bundle,
    check_entry_bundle,
)
from valueos_sdk.store import Store


def units(amount: str) -> tuple[int, int]:
    """(minor units, scale) of a decimal string as the API writes it (``-12.50``)."""
    negative = amount.startswith("-")
    whole, _, frac = amount.removeprefix("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise MirrorMismatch(f"{amount!r} is not an amount")
    value = int(whole + frac)
    return (-value if negative else value), len(frac)


@dataclass(frozen=True, slots=True)
class MirroredAccount:
    account_id: int
    asset: str
    scale: int
    #: (seq, operation id, operation type, amount, balance_after, epoch), oldest first
    entries: list[tuple[int, int, str, int, int, int]]

    @property
    def balance(self) -> int:
        return self.entries[-1][4] if self.entries else 0


class Mirror:
    def __init__(self, client: AsyncClient, store: Store) -> None:
        self.client = client
        self.store = store

    def account(self, account_id: int) -> MirroredAccount | None:
        state = self.store.get(f"mirror.{account_id}")
        if state is None:
            return None
        entries = [tuple(e) for e in state["entries"]]
        if any(len(e) != 6 for e in entries):  # mirrored before entries kept their epoch
            return None
        return MirroredAccount(account_id, state["asset"], state["scale"], entries)

    async def pull(self, account_id: int, *, page: int = 100) -> MirroredAccount:
        """Fetch the entries newer than those held, check them, store them."""
        held = self.account(account_id)
        last_seq = held.entries[-1][0] if held and held.entries else 0
        fresh: list[HistoryEntryRead] = []
        asset = held.asset if held else ""
        cursor: int | None = None
        while True:
            history = await self.client.entries(account_id, cursor=cursor, limit=page)
            asset = history.asset
            older = [e for e in history.entries if e.seq > last_seq]
            fresh += older
            if len(older) < len(history.entries):
                break  # reached what is held
            if history.next_cursor is None:
                break  # the account's first entry: it starts from zero
            cursor = history.next_cursor
        fresh.sort(key=lambda e: e.seq)
        entries = list(held.entries) if held else []
        scale = held.scale if held else None
        for e in fresh:
            amount, s1 = units(e.amount)
            after, s2 = units(e.balance_after)
            if scale is None:
                scale = s1
            if {s1, s2} != {scale}:
                raise MirrorMismatch(f"entry {e.seq}: amounts not at the asset's scale {scale}")
            before = entries[-1][4] if entries else 0
            if entries and e.seq <= entries[-1][0]:
                raise MirrorMismatch(f"entry {e.seq} is not after entry {entries[-1][0]}")
            if before + amount != after:
                raise MirrorMismatch(f"entry {e.seq}: balance_after {after} != {before} + {amount}")
            entries.append((e.seq, e.operation_id, e.operation_type, amount, after, e.epoch))
        mirrored = MirroredAccount(account_id, asset, scale or 0, entries)
        self._save(mirrored)
        return mirrored

    async def check_balance(self, account_id: int) -> MirroredAccount:
        """Pull, then compare with the server's posted balance (pulling again while entries
        keep arriving in between)."""
        for _ in range(5):
            mirrored = await self.pull(account_id)
            posted, _ = units((await self.client.account(account_id)).balance.posted)
            again = await self.pull(account_id)
            if len(again.entries) == len(mirrored.entries):
                if posted != again.balance:
                    raise MirrorMismatch(
                        f"account {account_id}: posted {posted} != mirrored {again.balance}"
                    )
                return again
        raise MirrorMismatch(f"account {account_id} kept changing; try again")

    async def verify_entry(
        self,
        account_id: int,
        seq: int,
        *,
        identity: LedgerIdentity | None = None,
        rpc_url: str | None = None,
    ) -> dict[str, Any]:
        """Prove a mirrored entry: its bundle (``GET /proofs/entries/{seq}``) must lead from
        the entry as held here to its epoch's entries root; with ``rpc_url`` and the pinned
        ``identity``, that root must be the one anchored on chain. Returns the header."""
        held = self.account(account_id)
        entry = next((e for e in (held.entries if held else []) if e[0] == seq), None)
        if held is None or entry is None:
            raise MirrorMismatch(f"entry {seq} of account {account_id} is not mirrored")
        bundle = await self.client.request("GET", f"/api/v1/proofs/entries/{seq}")
        header = check_entry_bundle(
            bundle, account_id=account_id, entry=entry, asset=held.asset, identity=identity
        )
        if rpc_url is not None:
            if identity is None:
                raise ValueError("checking against the chain needs the pinned identity")
            await check_anchored(header, rpc_url, identity)
        return header

    async def verify_balance(
        self,
        account_id: int,
        epoch: int,
        *,
        identity: LedgerIdentity | None = None,
        rpc_url: str | None = None,
    ) -> dict[str, Any]:
        """Prove the mirror complete up to the end of ``epoch``: the account's balance bundle
        (``GET /proofs/balances/{id}?epoch=``) must lead to that epoch's balances root, and
        the mirrored entries up to the leaf's seq must fold to its entry count and entries
        hash and end on its balance (pulling first when the mirror is behind); with
        ``rpc_url`` and the pinned ``identity``, the root must be the anchored one. Returns
        the header."""
        bundle = await self.client.request(
            "GET", f"/api/v1/proofs/balances/{account_id}", params={"epoch": epoch}
        )
        held = self.account(account_id)
        seq = int((bundle.get("leaf") or {}).get("seq", 0))
        if held is None or not held.entries or held.entries[-1][0] < seq:
            held = await self.pull(account_id)
        upto = [(e[0], e[1], e[3], e[4], e[5]) for e in held.entries if e[0] <= seq]
        header = check_balance_bundle(
            bundle, account_id=account_id, asset=held.asset, entries=upto, identity=identity
        )
        if rpc_url is not None:
            if identity is None:
                raise ValueError("checking against the chain needs the pinned identity")
            await check_anchored(header, rpc_url, identity)
        return header

    def _save(self, account: MirroredAccount) -> None:
        state: dict[str, Any] = {"asset": account.asset, "scale": account.scale,
                                 "entries": [list(e) for e in account.entries]}  # fmt: skip
        self.store.put(f"mirror.{account.account_id}", state)
