"""The API's controllers, one module per resource.

Adding a resource (e.g. vaults, P2P, proofs): write ``api/controllers/<name>.py`` with
Litestar ``Controller`` classes whose every route has ``guards=[allow(ROLES, scope=...)]``
(or ``opt=PUBLIC``), export them as ``ROUTES``, and add the module name to ``MODULES``
below. ``create_app`` refuses to start if a route has no guard decision, and
``tests/e2e/test_access.py`` fails until the route has a row in its role table.
"""

from __future__ import annotations

import importlib

from litestar.types import ControllerRouterHandler

MODULES: tuple[str, ...] = (
    "system",
    "assets",
    "users",
    "accounts",
    "credits",
    "holds",
    "operations",
    "deposits",
    "credentials",
    "vaults",
    "p2p",
    "forensics",
    "compliance",
    "policies",
    "anchors",
    "audit",
    "bridges",
    "offline",
    "risk",
    "stellar",
)


def all_routes() -> list[ControllerRouterHandler]:
    routes: list[ControllerRouterHandler] = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        routes.extend(module.ROUTES)
    return routes
