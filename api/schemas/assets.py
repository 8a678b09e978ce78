"""Bodies of the asset endpoints."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from api.schemas.common import AssetCode, Create
from core.types import AssetKind


class AssetCreate(Create):
    code: AssetCode
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    scale: Annotated[int, Meta(ge=0, le=18)]
    kind: AssetKind


class AssetRead(Struct):
    code: str
    name: str
    scale: int
    kind: AssetKind
