"""The SDK's models against the server's OpenAPI document: the same fields, the same
required ones, the same JSON types. Fails when either side drifts."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from api.app import create_app
from api.settings import ApiSettings
from valueos_sdk import models

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    app = create_app(ApiSettings(jwt_secret="x" * 64, webhook_secret=None))
    return app.openapi_schema.to_schema()["components"]["schemas"]  # type: ignore[no-any-return]


def shape(schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """A comparable form of a property schema: JSON types (enums are strings; objects by
    name; arrays by their items)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = defs[name]
        if "enum" in target:
            return frozenset({"string"})
        return frozenset({("object", name)})
    for union in ("anyOf", "oneOf"):
        if union in schema:
            out: set[Any] = set()
            for member in schema[union]:
                out |= shape(member, defs)
            return frozenset(out)
    kind = schema.get("type")
    if kind == "array":
        return frozenset({("array", shape(schema["items"], defs))})
    if "enum" in schema:
        return frozenset({"string"})
    return frozenset({(kind, schema.get("format")) if schema.get("format") else kind})


@pytest.mark.parametrize("model", models.ALL, ids=lambda m: m.__name__)
def test_a_model_matches_the_server_schema_of_its_name(
    model: type[models.Model], components: dict[str, Any]
) -> None:
    _, sdk_defs = msgspec.json.schema_components([model], ref_template="#/$defs/{name}")
    server = components[model.__name__]
    mine = sdk_defs[model.__name__]
    assert set(mine["properties"]) == set(server["properties"]), model.__name__
    assert set(mine.get("required", [])) == set(server.get("required", [])), model.__name__
    for name, prop in mine["properties"].items():
        assert shape(prop, sdk_defs) == shape(server["properties"][name], components), (
            f"{model.__name__}.{name}"
        )


def test_a_drifted_model_is_caught(components: dict[str, Any]) -> None:
    class AllowanceRead(models.Model):  # a field renamed on the client
        id: int
        identifier: str

    (_,), defs = msgspec.json.schema_components([AllowanceRead])
    assert set(defs["AllowanceRead"]["properties"]) != set(
        components["AllowanceRead"]["properties"]
    )
