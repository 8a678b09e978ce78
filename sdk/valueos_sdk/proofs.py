"""Checking what the server says against the anchored roots: an entry the mirror holds is
proven to be in its epoch's entries root; an account's balance leaf is proven to be in its
epoch's balances root and the mirror's own entries of that account fold to the leaf's entry
count and entries hash (so the server omitted or added none); that epoch's header hashes from
its fields, and, with a node's JSON-RPC URL, the anchor contract of the pinned ledger identity
stores exactly that header and those roots.

A history bundle (``GET /proofs/history/{account}``: an account's entries between two epochs
with its balance bundles at both ends) is checked by :func:`check_history_bundle` the way
``valueos verify`` checks it: each end's balance leaf leads to its epoch's balances root, and
the entries, ascending after the first end's seq, lie in the epochs between, continue the
first end's balance, and fold from its (entry count, entries hash) to exactly the second
end's, so no entry of the account was omitted, added, reordered or altered.
:func:`verified_history` asks for a long range in pieces that end on sealed epochs (the
server lists at most 10,000 entries per bundle) and joins them.

Uses the repository's Merkle package (``merkle``: OpenZeppelin-compatible leaves, trees and
header hashing) and plain JSON-RPC calls over httpx, so it needs neither web3 nor server code.
Every failure raises :class:`MirrorMismatch` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from valueos_sdk.errors import ApiError, HistoryTooLong, MirrorMismatch, NotFound

if TYPE_CHECKING:
    from valueos_sdk.client import AsyncClient
    from valueos_sdk.models import HistoryBundleRead

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
    from merkle.leaves import EntryLeaf  # noqa: PLC0415 - only when verifying
    from merkle.tree import verify  # noqa: PLC0415

    if bundle.get("version") != 1 or bundle.get("kind") != "entry":
        raise MirrorMismatch("not an entry proof bundle (version 1)")
    header = bundle.get("header") or {}
    leaf_fields = bundle.get("leaf") or {}
    seq, operation_id, _, amount, balance_after = entry[:5]
    ledger_id = _b32(header.get("ledger_id"), "ledger_id")
    if identity is not None and ledger_id != identity.ledger_id:
        raise MirrorMismatch("the proof is of another ledger than the pinned one")
    _, epoch, _ = _header_hash(header)
    try:
        leaf = EntryLeaf(ledger_id, epoch, seq, operation_id, account_id, asset, amount,
                         balance_after)  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise MirrorMismatch(f"the mirrored entry {seq} makes no leaf: {exc}") from None
    if int(leaf_fields.get("epoch", -1)) != epoch:
        raise MirrorMismatch("the bundle's leaf is of another epoch than its header")
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


@dataclass(frozen=True, slots=True)
class BalanceEnd:
    """A proven end of a history: the account's balance leaf at the end of ``epoch``."""

    epoch: int
    seq: int
    balance: int
    entry_count: int
    entries_hash: bytes
    #: the epoch's header (its fields hash to ``header_hash``; its balances root holds the leaf)
    header: dict[str, Any]


@dataclass(frozen=True, slots=True)
class VerifiedHistory:
    """An account's entries after the end of ``from_epoch`` (0: from its first entry) up to
    the end of ``to_epoch``, proven complete against the balance leaves at both ends."""

    account_id: int
    asset: str
    from_epoch: int
    to_epoch: int
    #: None: no entry by the end of ``from_epoch`` (the entries start at the account's first)
    start: BalanceEnd | None
    end: BalanceEnd
    #: (seq, operation id, amount, balance_after, epoch), oldest first, minor units
    entries: list[tuple[int, int, int, int, int]]

    @property
    def headers(self) -> list[dict[str, Any]]:
        """The headers the proof rests on (check them against the chain with
        :func:`check_anchored`)."""
        return [x.header for x in (self.start, self.end) if x is not None]


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MirrorMismatch(f"{name} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise MirrorMismatch(f"{name} is not an integer") from None


def _balance_end(
    end: Any, name: str, account_id: int, asset: str, epoch: int, identity: LedgerIdentity | None
) -> BalanceEnd:
    """One end of a history: a balance bundle (leaf format 2) of ``account_id`` in ``asset``
    at ``epoch`` whose leaf leads to its header's balances root."""
    from merkle.leaves import BalanceLeaf  # noqa: PLC0415 - only when verifying
    from merkle.tree import verify  # noqa: PLC0415

    if not isinstance(end, dict) or end.get("version") != 1 or end.get("kind") != "balance":
        raise MirrorMismatch(f"the history's {name!r} is not a balance bundle (version 1)")
    header = end.get("header")
    f = end.get("leaf")
    if not isinstance(header, dict) or not isinstance(f, dict):
        raise MirrorMismatch(f"the history's {name!r} has no header or leaf")
    ledger_id, header_epoch, _ = _header_hash(header)
    if identity is not None and ledger_id != identity.ledger_id:
        raise MirrorMismatch("the proof is of another ledger than the pinned one")
    if header_epoch == 1 and _b32(header.get("prev_header"), "prev_header") != ZERO:
        raise MirrorMismatch("epoch 1 must chain to the zero header")
    if f.get("entry_count") is None:
        raise MirrorMismatch(
            f"the history's {name!r} balance leaf has no entry count and hash (leaf format 1)"
        )
    leaf = BalanceLeaf(
        _b32(f.get("ledger_id"), "leaf.ledger_id"), _int(f.get("epoch"), "leaf.epoch"),
        _int(f.get("seq"), "leaf.seq"), _int(f.get("account_id"), "leaf.account_id"),
        str(f.get("asset_code")), _int(f.get("balance"), "leaf.balance"),
        _int(f.get("entry_count"), "leaf.entry_count"),
        _b32(f.get("entries_hash"), "leaf.entries_hash"),
    )  # fmt: skip
    if leaf.ledger_id != ledger_id or leaf.epoch != header_epoch:
        raise MirrorMismatch(f"the history's {name!r} leaf is of another ledger or epoch")
    if (leaf.account_id, leaf.asset_code, leaf.epoch) != (account_id, asset, epoch):
        raise MirrorMismatch(
            f"the {name!r} balance is of account {leaf.account_id} ({leaf.asset_code}) at epoch "
            f"{leaf.epoch}, the history is of account {account_id} ({asset}) at {epoch}"
        )
    leaf_hash = leaf.hash()
    if "leaf_hash" in end and _b32(end["leaf_hash"], "leaf_hash") != leaf_hash:
        raise MirrorMismatch(f"the history's {name!r} leaf hash does not match its fields")
    raw_proof = end.get("proof")
    if not isinstance(raw_proof, list):
        raise MirrorMismatch(f"the history's {name!r} proof is not a list")
    proof = [_b32(p, "proof") for p in raw_proof]
    if not verify(_b32(header.get("balances_root"), "balances_root"), leaf_hash, proof):
        raise MirrorMismatch(
            f"the {name!r} balance of account {account_id} is not in the balances root of "
            f"epoch {epoch}"
        )
    return BalanceEnd(epoch, leaf.seq, leaf.balance, leaf.entry_count, leaf.entries_hash,
                      dict(header))  # fmt: skip


def _listed(
    items: Any,
    ledger_id: bytes,
    account: int,
    asset: str,
    epochs: tuple[int, int],
    after_start: tuple[int, int],
) -> tuple[list[tuple[int, int, int, int, int]], list[bytes], int, int]:
    """A history's entries checked in order from ``after_start`` (seq, balance) within the
    epochs after ``epochs[0]`` up to ``epochs[1]``: (entries, their ENTRY leaf hashes, last
    balance, last seq)."""
    from merkle.leaves import EntryLeaf  # noqa: PLC0415 - only when verifying

    if not isinstance(items, list):
        raise MirrorMismatch("the history's entries are not a list")
    (a, b), (seq, balance) = epochs, after_start
    entries: list[tuple[int, int, int, int, int]] = []
    hashes = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MirrorMismatch(f"entries[{i}] is not an object")
        e_seq, e_epoch = _int(item.get("seq"), "seq"), _int(item.get("epoch"), "epoch")
        op = _int(item.get("operation_id"), "operation_id")
        amount, after = (
            _int(item.get("amount"), "amount"),
            _int(item.get("balance_after"), "balance_after"),
        )
        if e_seq <= seq:
            raise MirrorMismatch(
                f"entry {e_seq} is not after entry {seq}: entries out of order or repeated, or "
                "before the 'from' balance"
            )
        if not a + 1 <= e_epoch <= b:
            raise MirrorMismatch(f"entry {e_seq} is of epoch {e_epoch}, outside {a + 1}..{b}")
        if balance + amount != after:
            raise MirrorMismatch(f"entry {e_seq}: balance_after {after} != {balance} + {amount}")
        try:
            hashes.append(
                EntryLeaf(ledger_id, e_epoch, e_seq, op, account, asset, amount, after).hash()
            )
        except ValueError as exc:
            raise MirrorMismatch(f"entries[{i}]: {exc}") from None
        balance, seq = after, e_seq
        entries.append((e_seq, op, amount, after, e_epoch))
    return entries, hashes, balance, seq


def check_history_bundle(
    bundle: HistoryBundleRead | dict[str, Any],
    *,
    account_id: int | None = None,
    identity: LedgerIdentity | None = None,
) -> VerifiedHistory:
    """The checks of ``valueos verify`` on a history bundle (the model or its JSON): both
    ends' balance proofs; the entries ascend by seq after the first end's seq and lie in the
    epochs after it up to the second end (after ``from_epoch`` too when ``from`` is null:
    the server says the account had no entry by then); each ``balance_after`` continues the
    previous one from the first end's balance (0 without one) and the last is the second
    end's balance at its seq; their ENTRY leaf hashes fold from the first end's (entry count,
    entries hash) to exactly the second end's. ``account_id``: the account asked for."""
    from merkle.leaves import fold_entries  # noqa: PLC0415 - only when verifying

    raw = bundle if isinstance(bundle, dict) else msgspec.to_builtins(bundle)
    if raw.get("version") != 1 or raw.get("kind") != "history":
        raise MirrorMismatch("not a history bundle (version 1)")
    account = _int(raw.get("account_id"), "account_id")
    if account_id is not None and account != account_id:
        raise MirrorMismatch(f"asked for the history of account {account_id}, got {account}'s")
    asset = str(raw.get("asset_code"))
    a, b = _int(raw.get("from_epoch"), "from_epoch"), _int(raw.get("to_epoch"), "to_epoch")
    if not 0 <= a < b:
        raise MirrorMismatch(f"from_epoch {a} is not before to_epoch {b}")
    to = _balance_end(raw.get("to"), "to", account, asset, b, identity)
    start = None
    if raw.get("from") is not None:
        start = _balance_end(raw.get("from"), "from", account, asset, a, identity)
        if start.header["ledger_id"] != to.header["ledger_id"]:
            raise MirrorMismatch("the two ends belong to different ledgers")
    ledger_id = _b32(to.header["ledger_id"], "ledger_id")
    count, folded, balance, seq = (
        (start.entry_count, start.entries_hash, start.balance, start.seq) if start else
        (0, ZERO, 0, 0)
    )  # fmt: skip
    entries, hashes, balance, seq = _listed(
        raw.get("entries"), ledger_id, account, asset, (a, b), (seq, balance)
    )
    count, folded = fold_entries(count, folded, hashes)
    before = start.entry_count if start else 0
    if count != to.entry_count:
        raise MirrorMismatch(
            f"account {account}: the history lists {count - before} entries, the anchored entry "
            f"counts say {to.entry_count - before}: an entry is missing or added"
        )
    if folded != to.entries_hash:
        raise MirrorMismatch(
            f"account {account}: the listed entries do not fold to the anchored entries hash of "
            f"epoch {b}: an entry was altered, replaced or reordered"
        )
    if (balance, seq) != (to.balance, to.seq):
        raise MirrorMismatch(
            f"account {account}: the entries end at balance {balance} (seq {seq}), the anchored "
            f"balance of epoch {b} is {to.balance} (seq {to.seq})"
        )
    return VerifiedHistory(account, asset, a, b, start, to, entries)


def _too_long(exc: ApiError) -> bool:
    return isinstance(exc, HistoryTooLong)


async def verified_history(
    client: AsyncClient,
    account_id: int,
    *,
    to_epoch: int,
    from_epoch: int = 0,
    identity: LedgerIdentity | None = None,
    rpc_url: str | None = None,
) -> VerifiedHistory:
    """The account's entries after ``from_epoch`` up to the end of ``to_epoch``, proven
    complete (:func:`check_history_bundle`). A range the server refuses as too long (more
    than 10,000 entries) is asked for in two halves split at a sealed epoch, recursively;
    each piece is a complete bundle between two epochs, and the ``to`` end of one must be
    the ``from`` end of the next (the same leaf in the same header), so the pieces join into
    one proven history. A piece whose ``to`` epoch has no leaf (404: no entry by then) adds
    nothing, and the next piece then has no ``from`` and starts at the account's first
    entry. One epoch holding more than 10,000 of the account's entries cannot be proven
    over the API (MirrorMismatch). With ``rpc_url`` (and the pinned ``identity``) every
    header the pieces rest on must be the anchored one."""
    pieces: list[VerifiedHistory] = []

    async def fetch(a: int, b: int, *, outer: bool) -> None:
        try:
            bundle = await client.history_proof(account_id, to_epoch=b, from_epoch=a)
        except NotFound:
            if outer:
                raise
            return  # no entry of the account by the end of b: nothing in a..b
        except ApiError as exc:
            if not _too_long(exc):
                raise
            if b - a == 1:
                raise MirrorMismatch(
                    f"account {account_id} has more than the server's limit of entries in epoch "
                    f"{b} alone: its history cannot be proven over the API"
                ) from exc
            middle = (a + b) // 2
            await fetch(a, middle, outer=False)
            await fetch(middle, b, outer=outer)
            return
        pieces.append(check_history_bundle(bundle, account_id=account_id, identity=identity))

    await fetch(from_epoch, to_epoch, outer=True)
    first = pieces[0]
    if first.start is not None and first.from_epoch != from_epoch:
        # the pieces before were answered "no entry by then", this one has a leaf at its start
        raise MirrorMismatch(
            f"account {account_id}: no entry by the end of epoch {first.from_epoch} was "
            "claimed, then a balance leaf there was served"
        )
    joined = VerifiedHistory(
        account_id, first.asset, from_epoch, first.to_epoch, first.start, first.end,
        first.entries,
    )  # fmt: skip
    for piece in pieces[1:]:
        prev = joined.end
        if piece.start is None or (
            (piece.start.seq, piece.start.entry_count, piece.start.entries_hash,
             piece.start.balance, piece.start.header["header_hash"])
            != (prev.seq, prev.entry_count, prev.entries_hash, prev.balance,
                prev.header["header_hash"])
        ):  # fmt: skip
            raise MirrorMismatch(
                f"account {account_id}: the pieces of its history do not join at epoch "
                f"{piece.from_epoch}"
            )
        joined = VerifiedHistory(
            account_id, joined.asset, from_epoch, piece.to_epoch, joined.start, piece.end,
            joined.entries + piece.entries,
        )  # fmt: skip
    if joined.to_epoch != to_epoch:
        raise MirrorMismatch(f"account {account_id}: the pieces end at epoch {joined.to_epoch}")
    if rpc_url is not None:
        if identity is None:
            raise ValueError("checking against the chain needs the pinned identity")
        seen: set[str] = set()
        for piece in pieces:
            for header in piece.headers:
                if header["header_hash"] not in seen:
                    seen.add(header["header_hash"])
                    await check_anchored(header, rpc_url, identity)
    return joined
