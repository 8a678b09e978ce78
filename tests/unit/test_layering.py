"""The package table of the architecture, checked on every import statement of the tree.

| package | may import (of the project)     | never imports          |
|---------|---------------------------------|------------------------|
| merkle  | nothing                         | any I/O library        |
| core    | merkle                          | web3, litestar         |
| chain   | core, merkle                    | litestar, asyncpg,     |
|         |                                 | sqlalchemy             |
| api     | core, chain, merkle             | asyncpg, sqlalchemy    |
| jobs    | core, chain, merkle             | litestar, asyncpg,     |
|         |                                 | sqlalchemy             |

SQL and the database driver stay in ``core`` (store modules), and driver failures become core
errors there (``core.storage_errors``): the edges never see an asyncpg or SQLAlchemy exception.

Inside core, SQL is SQLAlchemy ``text()`` with named parameters on the engine's connections,
except in :data:`RAW_DRIVER`: the write path and what shares its asyncpg connection or its
bulk (binary COPY, array parameters, millions of rows without per-row objects), which run
positional ``$n`` SQL on the raw asyncpg connection (``core.epochs.raw_connection``).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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
    "chain": ("litestar", "asyncpg", "sqlalchemy"),
    "api": ("asyncpg", "sqlalchemy"),
    "jobs": ("litestar", "asyncpg", "sqlalchemy"),
}


#: the modules of core that run SQL on the raw asyncpg connection (see the module's docstring)
RAW_DRIVER = {
    "core/storage_errors.py",  # the one translation of driver failures
    "core/repository.py",  # the posting write path: binary COPY, one statement per table
    "core/policy/store.py",  # the policies and usage the write path loads in its transaction
    "core/policy/versions.py",  # the dry run: the write path's planner on the same reads
    "core/request_records.py",  # the group-committed idempotency records
    "core/epochs.py",  # sealing: every entry of an epoch, trees stored as bytea arrays
    "core/integrity.py",  # the self-audit: the same rows, rebuilt
    "core/proofs.py",  # proof paths out of the stored tree levels
    "core/anchors.py",  # anchor rows, written in the outbox's transactions
    "core/chain_txs.py",  # the outbox rows, written inside the posting transaction too
    "core/bridges/supply.py",  # the supply invariant: outbox rows, one snapshot
}
_POSITIONAL = re.compile(r"(?<![\w$])\$[1-9][0-9]*(?=::|[\s,)\]\"']|$)", re.MULTILINE)


def imports(package: str) -> Iterator[tuple[Path, str]]:
    """(file, imported module) for every import in ``package``, lazy imports included."""
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue  # alembic scripts are data for the migrator
        yield from imports_of(path)


def imports_of(path: Path) -> Iterator[tuple[Path, str]]:
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


@pytest.mark.unit
@pytest.mark.parametrize("package", ["api", "jobs"])
def test_no_edge_module_holds_a_driver_or_sqlalchemy_exception(package: str) -> None:
    """Every module of the edge, imported: none has an asyncpg or SQLAlchemy exception class
    (or those packages) in its namespace, so none can catch or raise one."""
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, prefix=package + ".")]
    assert len(names) >= 3
    for name in names:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, ModuleType):
                origin = value.__name__
            elif isinstance(value, type) and issubclass(value, BaseException):
                origin = value.__module__
            else:
                continue
            foreign = origin.split(".")[0] in {"asyncpg", "sqlalchemy"}
            assert not foreign, f"{name}.{attr} comes from {origin}"


@pytest.mark.unit
def test_the_sdk_imports_no_server_code() -> None:
    """``sdk/valueos_sdk`` is shipped on its own: of the project it may use the Merkle package
    only, and no server-side library."""
    banned = {"core", "api", "chain", "jobs", "valueos", "bench", "tests", "asyncpg", "sqlalchemy",
              "litestar", "alembic"}  # fmt: skip
    wrong = [
        f"{path.relative_to(ROOT)}: {name}"
        for path, name in imports("sdk")
        if name.split(".")[0] in banned
    ]
    assert not wrong, f"the SDK must not import {sorted(banned)}: {wrong}"


@pytest.mark.unit
def test_raw_driver_sql_stays_in_the_declared_modules() -> None:
    """One SQL style per module kind: positional ``$n`` SQL and the asyncpg import appear only
    in :data:`RAW_DRIVER`; every other module of core uses SQLAlchemy ``text()``."""
    raw = set()
    for path in sorted((ROOT / "core").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        source = path.read_text()
        uses_driver = any(name.split(".")[0] == "asyncpg" for p, name in imports_of(path))
        if uses_driver or _POSITIONAL.search(source):
            raw.add(str(path.relative_to(ROOT)))
    assert raw <= RAW_DRIVER, f"raw asyncpg SQL outside RAW_DRIVER: {sorted(raw - RAW_DRIVER)}"
    assert RAW_DRIVER - raw == set(), f"no longer raw (drop them): {sorted(RAW_DRIVER - raw)}"
