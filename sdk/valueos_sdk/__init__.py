"""Value OS client SDK: a typed async client (and its blocking facade), an offline queue of
idempotent writes, a local mirror checked for continuity, and offline vouchers.

    from valueos_sdk import Client
    with Client("http://127.0.0.1:8000", api_key="vo_...") as vo:
        me = vo.me()
        wallet = vo.wallets(me.user_id)[0]
        vo.transfer(wallet.compartments[0].account_id, payee_id, "12.50")
"""

from valueos_sdk.client import AsyncClient, Client, RetryPolicy
from valueos_sdk.errors import (
    ApiError,
    MirrorMismatch,
    Unreachable,
    ValueOSError,
    VoucherRejected,
)
from valueos_sdk.queue import OfflineQueue, SyncReport
from valueos_sdk.store import FileStore, MemoryStore, Record, SQLiteStore, Store
from valueos_sdk.vouchers import Accepted, Terminal, Wallet

__all__ = [
    "Accepted",
    "ApiError",
    "AsyncClient",
    "Client",
    "FileStore",
    "MemoryStore",
    "MirrorMismatch",
    "OfflineQueue",
    "Record",
    "RetryPolicy",
    "SQLiteStore",
    "Store",
    "SyncReport",
    "Terminal",
    "Unreachable",
    "ValueOSError",
    "VoucherRejected",
    "Wallet",
]
