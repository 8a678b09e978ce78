"""The HTTP client: :class:`AsyncClient` (async, typed) and :class:`Client` (the same calls,
blocking).

* **Auth**: an API key (``X-API-Key``), optionally exchanged for a bearer token that is
  refreshed before it expires and once more on a 401; or a fixed bearer token.
* **Retries**: connection failures, 429, 502-504 and ``IDEMPOTENCY_IN_PROGRESS`` are retried
  with exponential backoff and jitter (``Retry-After`` honoured). Every write carries an
  ``Idempotency-Key`` (generated when not given) and **every retry reuses it**, so a retried
  write has one effect.
* **Errors**: problem+json answers raise the typed exceptions of :mod:`valueos_sdk.errors`
  with the stable ``code``; a server that stays unreachable raises :class:`Unreachable`.
* **Pagination**: ``iter_*`` methods follow ``next_cursor`` until the end.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import msgspec

from valueos_sdk import models as m
from valueos_sdk.errors import ApiError, IdempotencyInProgress, Unreachable, from_problem
from valueos_sdk.proofs import LedgerIdentity, VerifiedHistory, verified_history

T = TypeVar("T")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto


def new_key() -> str:
    return "sdk-" + uuid.uuid4().hex


class AsyncClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        use_tokens: bool = False,
        retry: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if api_key is None and token is None:
            raise ValueError("give an api_key or a token")
        self.api_key = api_key
        self._token = token
        self._token_until = float("inf") if token else 0.0
        self.use_tokens = use_tokens and api_key is not None
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- plumbing ------------------------------------------------------------------------
    async def _auth(self, *, refresh: bool = False) -> dict[str, str]:
        if not self.use_tokens:
            if self._token is not None:
                return {"Authorization": f"Bearer {self._token}"}
            return {"X-API-Key": self.api_key or ""}
        if refresh or self._token is None or time.monotonic() >= self._token_until:
            r = await self.http.post(
                "/api/v1/auth/token", headers={"X-API-Key": self.api_key or ""}
            )
            if r.status_code != 200:
                raise _problem(r)
            token = msgspec.json.decode(r.content, type=m.TokenRead)
            self._token = token.access_token
            self._token_until = time.monotonic() + max(1.0, token.expires_in - 60)
        return {"Authorization": f"Bearer {self._token}"}

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Send with retries; the decoded JSON body, or a typed :class:`ApiError`. A write
        without ``idempotency_key`` gets one, the same for all its retries."""
        policy = retry or self.retry
        headers: dict[str, str] = {}
        if method.upper() in WRITES:
            headers["Idempotency-Key"] = idempotency_key or new_key()
        params = {k: v for k, v in (params or {}).items() if v is not None}
        refreshed = False
        last: Exception | None = None
        for attempt in range(policy.attempts):
            try:
                auth = await self._auth()
                r = await self.http.request(
                    method, path, json=json, params=params, headers=headers | auth
                )
            except httpx.TransportError as exc:
                last = exc
            else:
                if r.status_code == 401 and self.use_tokens and not refreshed:
                    refreshed = True
                    self._token = None
                    continue
                if r.status_code < 400:
                    return r.json() if r.content else None
                error = _problem(r)
                if not (r.status_code in RETRY_STATUS or isinstance(error, IdempotencyInProgress)):
                    raise error
                last = error
                retry_after = _retry_after(r)
                if attempt + 1 < policy.attempts:
                    await self._sleep(policy.delay(attempt, retry_after))
                continue
            if attempt + 1 < policy.attempts:
                await self._sleep(policy.delay(attempt))
        if isinstance(last, ApiError):
            raise last
        raise Unreachable(f"{method} {path}: {last!r}") from last

    async def _get(self, path: str, kind: type[T], **params: Any) -> T:
        return msgspec.convert(await self.request("GET", path, params=params), kind)

    async def _post(self, path: str, body: Any, kind: type[T], key: str | None = None) -> T:
        data = await self.request("POST", path, json=body, idempotency_key=key)
        return msgspec.convert(data, kind)

    # -- reads ---------------------------------------------------------------------------
    async def me(self) -> m.MeRead:
        return await self._get("/api/v1/me", m.MeRead)

    async def wallets(self, user_id: uuid.UUID) -> list[m.WalletRead]:
        return await self._get(f"/api/v1/users/{user_id}/wallets", list[m.WalletRead])

    async def account(self, account_id: int) -> m.AccountRead:
        return await self._get(f"/api/v1/accounts/{account_id}", m.AccountRead)

    async def entries(
        self, account_id: int, *, cursor: int | None = None, limit: int = 100
    ) -> m.HistoryRead:
        """One page of an account's entries, newest first."""
        return await self._get(
            f"/api/v1/accounts/{account_id}/entries", m.HistoryRead, cursor=cursor, limit=limit
        )

    async def iter_entries(
        self, account_id: int, *, limit: int = 100
    ) -> AsyncIterator[m.HistoryEntryRead]:
        """Every entry of the account, newest first, page after page."""
        cursor: int | None = None
        while True:
            page = await self.entries(account_id, cursor=cursor, limit=limit)
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- proofs (checked locally by :mod:`valueos_sdk.proofs`) ------------------------------
    async def entry_proof(self, seq: int) -> m.ProofBundleRead:
        """The proof bundle of entry ``seq`` against its epoch's entries root."""
        return await self._get(f"/api/v1/proofs/entries/{seq}", m.ProofBundleRead)

    async def balance_proof(self, account_id: int, epoch: int) -> m.ProofBundleRead:
        """The proof bundle of the account's balance leaf at the end of ``epoch``."""
        return await self._get(
            f"/api/v1/proofs/balances/{account_id}", m.ProofBundleRead, epoch=epoch
        )

    async def history_proof(
        self, account_id: int, *, to_epoch: int, from_epoch: int = 0
    ) -> m.HistoryBundleRead:
        """One history bundle: the account's entries after ``from_epoch`` (0: from its first)
        up to the end of ``to_epoch`` with the balance bundles at both ends (422 for more
        than 10,000 entries: :meth:`verified_history` splits the range)."""
        return await self._get(
            f"/api/v1/proofs/history/{account_id}", m.HistoryBundleRead,
            to_epoch=to_epoch, from_epoch=from_epoch,
        )  # fmt: skip

    async def verified_history(
        self,
        account_id: int,
        *,
        to_epoch: int,
        from_epoch: int = 0,
        identity: LedgerIdentity | None = None,
        rpc_url: str | None = None,
    ) -> VerifiedHistory:
        """The account's history between two epochs, proven complete locally, fetched in
        pieces ending on sealed epochs when it is long (:func:`.proofs.verified_history`)."""
        return await verified_history(
            self, account_id, to_epoch=to_epoch, from_epoch=from_epoch, identity=identity,
            rpc_url=rpc_url,
        )  # fmt: skip

    # -- writes --------------------------------------------------------------------------
    async def transfer(
        self, from_account_id: int, to_user_id: uuid.UUID, amount: str, *,
        memo: str | None = None, idempotency_key: str | None = None,
    ) -> m.OperationRead:  # fmt: skip
        body = {"from_account_id": from_account_id, "to_user_id": str(to_user_id),
                "amount": amount} | ({"memo": memo} if memo else {})  # fmt: skip
        return await self._post("/api/v1/credits/transfer", body, m.OperationRead, idempotency_key)

    # -- offline ---------------------------------------------------------------------------
    async def issuer(self) -> m.IssuerRead:
        return await self._get("/api/v1/offline/issuer", m.IssuerRead)

    async def register_device(
        self, public_key: str, proof: str, name: str, *, idempotency_key: str | None = None
    ) -> m.DeviceRead:
        body = {"public_key": public_key, "proof": proof, "name": name}
        return await self._post("/api/v1/offline/devices", body, m.DeviceRead, idempotency_key)

    async def devices(self) -> list[m.DeviceRead]:
        """Your registered device keys."""
        return await self._get("/api/v1/offline/devices", list[m.DeviceRead])

    async def revoke_device(
        self, device_id: int, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> m.DeviceRead:
        """Revoke a device key: no new allowance is bound to it; vouchers it signed against
        its open allowances are still honoured until they expire or are released."""
        body = {"reason": reason} if reason else {}
        path = f"/api/v1/offline/devices/{device_id}/revoke"
        return await self._post(path, body, m.DeviceRead, idempotency_key)

    async def open_allowance(
        self, from_account_id: int, device_id: int, amount: str, *, expires_in: int = 7 * 86400,
        idempotency_key: str | None = None,
    ) -> m.AllowanceRead:  # fmt: skip
        body = {"from_account_id": from_account_id, "device_id": device_id, "amount": amount,
                "expires_in": expires_in}  # fmt: skip
        return await self._post(
            "/api/v1/offline/allowances", body, m.AllowanceRead, idempotency_key
        )

    async def allowance(self, allowance_id: int) -> m.AllowanceRead:
        return await self._get(f"/api/v1/offline/allowances/{allowance_id}", m.AllowanceRead)

    async def iter_allowances(self, *, limit: int = 50) -> AsyncIterator[m.AllowanceRead]:
        cursor: int | None = None
        while True:
            page = await self._get(
                "/api/v1/offline/allowances", m.AllowancePageRead, cursor=cursor, limit=limit
            )
            for a in page.allowances:
                yield a
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def release_allowance(
        self, allowance_id: int, final_cumulative: int, signature: str, *,
        idempotency_key: str | None = None,
    ) -> m.AllowanceRead:  # fmt: skip
        body = {"final_cumulative": final_cumulative, "signature": signature}
        path = f"/api/v1/offline/allowances/{allowance_id}/release"
        return await self._post(path, body, m.AllowanceRead, idempotency_key)

    async def redeem(
        self, vouchers: list[str], *, idempotency_key: str | None = None
    ) -> m.RedeemRead:
        body = {"vouchers": vouchers}
        return await self._post("/api/v1/offline/redemptions", body, m.RedeemRead, idempotency_key)

    async def iter_redemptions(
        self, *, role: str | None = None, allowance_id: int | None = None, limit: int = 50
    ) -> AsyncIterator[m.VoucherRead]:
        cursor: int | None = None
        while True:
            page = await self._get(
                "/api/v1/offline/redemptions", m.VoucherPageRead, role=role,
                allowance_id=allowance_id, cursor=cursor, limit=limit,
            )  # fmt: skip
            for v in page.vouchers:
                yield v
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def _problem(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return from_problem(r.status_code, body)


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Client:
    """The blocking facade: every :class:`AsyncClient` call, run on a private event loop.
    ``iter_*`` methods return plain iterators."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._async = self._loop.run_until_complete(_make(base_url, options))

    @property
    def aio(self) -> AsyncClient:
        return self._async

    def run(self, awaitable: Awaitable[T]) -> T:
        return self._loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self._async.aclose())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._async, name)
        if not callable(target):
            return target
        if name.startswith("iter_"):

            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                agen = target(*args, **kwargs)
                while True:
                    try:
                        yield self.run(agen.__anext__())
                    except StopAsyncIteration:
                        return

            return iterate

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(target(*args, **kwargs))

        return call


async def _make(base_url: str, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, **options)
