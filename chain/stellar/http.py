"""The HTTP transport of ``SorobanServerAsync``: an ``httpx`` client implementing the SDK's
``BaseAsyncClient`` (the SDK's own async client needs ``aiohttp_sse_client``, which only its
Horizon streaming uses and which this project does not install)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError

__all__ = ["HttpxClient"]


class HttpxClient(BaseAsyncClient):
    def __init__(self, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def get(
        self, url: str, params: dict[str, str] | None = None, max_content_size: int | None = None
    ) -> Response:
        try:
            got = await self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise SdkConnectionError(exc) from exc
        return Response(got.status_code, got.text, dict(got.headers), url)

    async def post(
        self, url: str, data: dict[str, str] | None = None, json_data: dict[str, Any] | None = None
    ) -> Response:
        try:
            got = await self._client.post(url, data=data, json=json_data)
        except httpx.HTTPError as exc:
            raise SdkConnectionError(exc) from exc
        return Response(got.status_code, got.text, dict(got.headers), url)

    def stream(
        self, url: str, params: dict[str, str] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        raise NotImplementedError("Horizon streaming is not used by the bridge")

    async def close(self) -> None:
        await self._client.aclose()
