"""Checking what the server says against the anchored roots: an entry the mirror holds is
proven to be in its epoch's entries root; an account's balance leaf is proven to be in its
epoch's balances root and the mirror's own entries of that account fold to the leaf's entry
count and entries hash (so the server omitted or added none); that epoch's header hashes from
its fields, and, with a node's JSON-RPC URL, the anchor contract of the pinned ledger identity
stores exactly that header and those roots.

Uses the repository's Merkle package (``merkle``: OpenZeppelin-compatible leaves, trees and
header hashing) and plain JSON-RPC calls over httpx, so it needs neither web3 nor server code.
Every failure raises :class:`MirrorMismatch` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from valueos_sdk.errors import MirrorMismatch

ZERO = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class LedgerIdentity:
    """What an auditor pins out of band: the chain, the anchor contract, the ledger id."""

    chain_id: int
    contract: str
    ledger_id: bytes


def _b32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise MirrorMismatch(f"{name} is not a 32-byte hex string")
    return bytes.fromhex(value[2:])


def check_entry_bundle(
    bundle: dict[str, Any],
    *,
    account_id: int,
    entry: tuple[Any, ...],
    asset: str,
    identity: LedgerIdentity | None = None,
) -> dict[str, Any]:
    """The bundle proves ``entry`` (as the mirror holds it: seq, operation id, type, amount,
    balance_after) of ``account_id``: the leaf is rebuilt from the mirror's own values, folded
    through the proof into the header's entries root, and the header hashed from its fields.
    Returns the header."""
    from merkle.leaves import EntryLeaf, header_hash  # noqa: PLC0415 - only when verifying
    from merkle.tree import verify  # noqa: PLC0415

    if bundle.get("version") != 1 or bundle.get("kind") != "entry":
        raise MirrorMismatch("not an entry proof bundle (version 1)")
    header = bundle.get("header") or {}
    leaf_fields = bundle.get("leaf") or {}
    seq, operation_id, _, amount, balance_after = entry[:5]
    ledger_id = _b32(header.get("ledger_id"), "ledger_id")
    if identity is not None and ledger_id != identity.ledger_id:
        raise MirrorMismatch("the proof is of another ledger than the pinned one")
    try:
        epoch = int(header["epoch"])
        leaf = EntryLeaf(ledger_id, epoch, seq, operation_id, account_id, asset, amount,
                         balance_after)  # fmt: skip
        computed = header_hash(
            ledger_id, epoch, _b32(header.get("prev_header"), "prev_header"),
            _b32(header.get("entries_root"), "entries_root"),
            _b32(header.get("balances_root"), "balances_root"),
            int(header["first_seq"]), int(header["last_seq"]), int(header["leaf_count"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorMismatch(f"the bundle's header is malformed: {exc}") from None
    if int(leaf_fields.get("epoch", -1)) != epoch:
        raise MirrorMismatch("the bundle's leaf is of another epoch than its header")
    if computed != _b32(header.get("header_hash"), "header_hash"):
        raise MirrorMismatch(f"epoch {epoch}: the header fields do not hash to its header hash")
    if not int(header["first_seq"]) <= seq <= int(header["last_seq"]):
        raise MirrorMismatch(f"entry {seq} is outside epoch {epoch}")
    proof = [_b32(p, "proof") for p in bundle.get("proof") or []]
    if not verify(_b32(header.get("entries_root"), "entries_root"), leaf.hash(), proof):
        raise MirrorMismatch(f"entry {seq} as mirrored is not in the entries root of epoch {epoch}")
    return dict(header)


def _header_hash(header: dict[str, Any]) -> tuple[bytes, int, bytes]:
    """(ledger id, epoch, header hash recomputed from the fields, checked against the claim)."""
    from merkle.leaves import header_hash  # noqa: PLC0415 - only when verifying

    ledger_id = _b32(header.get("ledger_id"), "ledger_id")
    try:
        epoch = int(header["epoch"])
        computed = header_hash(
            ledger_id, epoch, _b32(header.get("prev_header"), "prev_header"),
            _b32(header.get("entries_root"), "entries_root"),
            _b32(header.get("balances_root"), "balances_root"),
            int(header["first_seq"]), int(header["last_seq"]), int(header["leaf_count"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorMismatch(f"the bundle's header is malformed: {exc}") from None
    if computed != _b32(header.get("header_hash"), "header_hash"):
        raise MirrorMismatch(f"epoch {epoch}: the header fields do not hash to its header hash")
    return ledger_id, epoch, computed


def check_balance_bundle(
    bundle: dict[str, Any],
    *,
    account_id: int,
    asset: str,
    entries: list[tuple[int, int, int, int, int]],
    identity: LedgerIdentity | None = None,
) -> dict[str, Any]:
    """The bundle proves ``account_id``'s balance leaf, and ``entries`` (the mirror's entries
    of the account up to the leaf's seq, oldest first, as (seq, operation id, amount,
    balance_after, epoch)) are exactly the ones the leaf commits to: their ENTRY leaf hashes
    fold to its entry count and entries hash, and the last one's seq and balance are the
    leaf's. Returns the header."""
    from merkle.leaves import BalanceLeaf, EntryLeaf, fold_entries  # noqa: PLC0415
    from merkle.tree import verify  # noqa: PLC0415

    if bundle.get("version") != 1 or bundle.get("kind") != "balance":
        raise MirrorMismatch("not a balance proof bundle (version 1)")
    header = bundle.get("header") or {}
    f = bundle.get("leaf") or {}
    ledger_id, epoch, _ = _header_hash(header)
    if identity is not None and ledger_id != identity.ledger_id:
        raise MirrorMismatch("the proof is of another ledger than the pinned one")
    if "entry_count" not in f:
        raise MirrorMismatch(f"epoch {epoch}'s balance leaf has no entry count (leaf format 1)")
    try:
        leaf = BalanceLeaf(
            ledger_id, epoch, int(f["seq"]), account_id, asset, int(f["balance"]),
            int(f["entry_count"]), _b32(f.get("entries_hash"), "entries_hash"),
        )  # fmt: skip
        if int(f["epoch"]) != epoch or int(f["account_id"]) != account_id:
            raise MirrorMismatch("the bundle's leaf is of another epoch or account")
        proof = [_b32(p, "proof") for p in bundle.get("proof") or []]
        hashes = [
            EntryLeaf(ledger_id, e_epoch, seq, op, account_id, asset, amount, after).hash()
            for seq, op, amount, after, e_epoch in entries
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorMismatch(f"the balance bundle is malformed: {exc}") from None
    if not verify(_b32(header.get("balances_root"), "balances_root"), leaf.hash(), proof):
        raise MirrorMismatch(
            f"the balance of account {account_id} is not in the balances root of epoch {epoch}"
        )
    count, folded = fold_entries(0, ZERO, hashes)
    if count != leaf.entry_count:
        raise MirrorMismatch(
            f"account {account_id}: the mirror holds {count} entries up to epoch {epoch}, the "
            f"anchored balance leaf commits to {leaf.entry_count}: an entry was omitted or added"
        )
    if folded != leaf.entries_hash:
        raise MirrorMismatch(
            f"account {account_id}: the mirrored entries do not fold to the anchored entries "
            f"hash of epoch {epoch}: an entry differs from the one sealed"
        )
    last_seq, last_balance = (entries[-1][0], entries[-1][3]) if entries else (0, 0)
    if (last_seq, last_balance) != (leaf.seq, leaf.balance):
        raise MirrorMismatch(
            f"account {account_id}: the mirror's balance {last_balance} at seq {last_seq} is not "
            f"the anchored {leaf.balance} at seq {leaf.seq}"
        )
    return dict(header)


async def _rpc(http: httpx.AsyncClient, url: str, method: str, params: list[Any]) -> Any:
    r = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    body = r.json()
    if "error" in body:
        raise MirrorMismatch(f"{method}: {body['error']}")
    return body["result"]


def _selector(signature: str) -> str:
    from merkle.tree import keccak256  # noqa: PLC0415 - only when verifying

    return "0x" + keccak256(signature.encode()).hex()[:8]


async def anchored(
    rpc_url: str, identity: LedgerIdentity, epoch: int, *, http: httpx.AsyncClient | None = None
) -> bytes:
    """The header hash the pinned anchor contract stores for ``epoch`` (``headerOf``: the
    contract keeps one word per epoch, the header hash, which commits to both roots), after
    checking the node's chain id and the contract's ledger id."""
    client = http or httpx.AsyncClient(timeout=30)
    try:
        chain_id = int(await _rpc(client, rpc_url, "eth_chainId", []), 16)
        if chain_id != identity.chain_id:
            raise MirrorMismatch(f"the node is chain {chain_id}, not {identity.chain_id}")
        call = {"to": identity.contract, "data": _selector("ledgerId()")}
        ledger = bytes.fromhex((await _rpc(client, rpc_url, "eth_call", [call, "latest"]))[2:])
        if ledger != identity.ledger_id:
            raise MirrorMismatch("the contract anchors another ledger id")
        data = _selector("headerOf(uint64)") + epoch.to_bytes(32, "big").hex()
        call = {"to": identity.contract, "data": data}
        raw = bytes.fromhex((await _rpc(client, rpc_url, "eth_call", [call, "latest"]))[2:])
    finally:
        if http is None:
            await client.aclose()
    if len(raw) != 32:
        raise MirrorMismatch(f"headerOf({epoch}) answered {len(raw)} bytes")
    if raw == ZERO:
        raise MirrorMismatch(f"epoch {epoch} is not anchored")
    return raw


async def check_anchored(header: dict[str, Any], rpc_url: str, identity: LedgerIdentity) -> None:
    """The header a bundle carries is the one anchored on chain for its epoch: its fields
    hash to the header hash the contract stores (so its roots are the anchored ones)."""
    from merkle.leaves import header_hash  # noqa: PLC0415 - only when verifying

    epoch = int(header["epoch"])
    stored = await anchored(rpc_url, identity, epoch)
    try:
        computed = header_hash(
            identity.ledger_id, epoch, _b32(header.get("prev_header"), "prev_header"),
            _b32(header.get("entries_root"), "entries_root"),
            _b32(header.get("balances_root"), "balances_root"),
            int(header["first_seq"]), int(header["last_seq"]), int(header["leaf_count"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise MirrorMismatch(f"the bundle's header is malformed: {exc}") from None
    if stored != computed or stored != _b32(header.get("header_hash"), "header_hash"):
        raise MirrorMismatch(f"epoch {epoch}: the chain holds another header or roots")
