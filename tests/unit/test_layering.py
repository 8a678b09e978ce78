"""The package table of the architecture, checked on every import statement of the tree.

| package | may import (of the project)     | never imports          |
|---------|---------------------------------|------------------------|
| merkle  | nothing                         | any I/O library        |
| core    | merkle                          | web3, litestar         |
| chain   | core, merkle                    | litestar               |
| api     | core, chain, merkle             |                        |
| jobs    | core, chain, merkle             | litestar               |
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ("merkle", "core", "chain", "api", "jobs", "valueos", "bench", "tests")

MAY_IMPORT: dict[str, set[str]] = {
    "merkle": set(),
    "core": {"merkle"},
    "chain": {"core", "merkle"},
    "api": {"core", "chain", "merkle"},
    "jobs": {"core", "chain", "merkle"},
}
NEVER_IMPORTS: dict[str, tuple[str, ...]] = {
    "merkle": ("web3", "asyncpg", "sqlalchemy", "litestar", "socket", "http", "urllib"),
    "core": ("web3", "eth_account", "litestar"),
    "chain": ("litestar",),
    "jobs": ("litestar",),
}


def imports(package: str) -> Iterator[tuple[Path, str]]:
    """(file, imported module) for every import in ``package``, lazy imports included."""
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue  # alembic scripts are data for the migrator
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                yield from ((path, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


@pytest.mark.unit
@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_what_the_architecture_allows(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name in imports(package)
        if name.split(".")[0] in PROJECT and name.split(".")[0] not in allowed
    ]
    assert not wrong, f"{package} may import only {sorted(allowed)}: {wrong}"


@pytest.mark.unit
@pytest.mark.parametrize("package", sorted(NEVER_IMPORTS))
def test_a_package_keeps_out_the_libraries_of_other_layers(package: str) -> None:
    banned = NEVER_IMPORTS[package]
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name in imports(package)
        if name.split(".")[0] in banned
    ]
    assert not wrong, f"{package} must not import {banned}: {wrong}"
