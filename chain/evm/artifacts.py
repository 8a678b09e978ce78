"""Compiled contract artifacts committed under ``chain/evm/artifacts/<Name>.json``.

The files are produced by ``node contracts/build.mjs`` (solcjs, pinned in package.json) and
checked against a fresh build by ``node contracts/build.mjs --check``; see contracts/README.md.
Loading them needs no compiler, so the Python side deploys and calls the contracts from these
files alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Artifact", "ArtifactError", "available_artifacts", "load_artifact"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


class ArtifactError(ValueError):
    """An artifact is missing or malformed."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: what a deployer or a client needs, plus its provenance."""

    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    compiler_settings: dict[str, Any]
    source_sha256: dict[str, str]

    def entries(self, kind: str) -> list[dict[str, Any]]:
        """ABI entries of one type: ``function``, ``event``, ``error``, ``constructor``..."""
        return [e for e in self.abi if e.get("type") == kind]

    @property
    def function_names(self) -> frozenset[str]:
        return frozenset(str(e["name"]) for e in self.entries("function"))

    @property
    def event_names(self) -> frozenset[str]:
        return frozenset(str(e["name"]) for e in self.entries("event"))

    @property
    def error_names(self) -> frozenset[str]:
        return frozenset(str(e["name"]) for e in self.entries("error"))

    @property
    def deployable(self) -> bool:
        """False for interfaces and abstract contracts (no creation code)."""
        return self.bytecode != "0x"


def _artifact_dir() -> Any:
    return resources.files("chain.evm") / "artifacts"


def available_artifacts() -> list[str]:
    """Names of the committed artifacts, sorted."""
    directory = _artifact_dir()
    if not directory.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".json")
        for entry in directory.iterdir()
        if entry.name.endswith(".json")
    )


def _require(data: dict[str, Any], key: str, kind: type, name: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ArtifactError(f"artifact {name}: field {key!r} missing or not a {kind.__name__}")
    return value


@cache
def load_artifact(name: str) -> Artifact:
    """Load ``chain/evm/artifacts/<name>.json`` (e.g. ``load_artifact("LedgerAnchor")``).

    Raises ArtifactError if the name is not a contract identifier, the file does not exist, or
    it lacks a field. Results are cached: artifacts are immutable for the life of the process.
    """
    if not _NAME.fullmatch(name):
        raise ArtifactError(f"not a contract name: {name!r}")
    path = _artifact_dir() / f"{name}.json"
    if not path.is_file():
        known = ", ".join(available_artifacts()) or "none"
        raise ArtifactError(
            f"no artifact {name}.json in chain/evm/artifacts (known: {known}); "
            "run `node contracts/build.mjs`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"artifact {name}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"artifact {name}: not a JSON object")

    compiler = _require(data, "compiler", dict, name)
    bytecode = _require(data, "bytecode", str, name)
    deployed = _require(data, "deployedBytecode", str, name)
    for field_name, code in (("bytecode", bytecode), ("deployedBytecode", deployed)):
        if not _HEX.fullmatch(code):
            raise ArtifactError(f"artifact {name}: {field_name} is not 0x-prefixed hex bytes")
    contract_name = _require(data, "contractName", str, name)
    if contract_name != name:
        raise ArtifactError(f"artifact {name}.json holds contract {contract_name!r}")
    return Artifact(
        name=contract_name,
        source_name=_require(data, "sourceName", str, name),
        abi=_require(data, "abi", list, name),
        bytecode=bytecode,
        deployed_bytecode=deployed,
        compiler_version=_require(compiler, "version", str, name),
        compiler_settings=_require(compiler, "settings", dict, name),
        source_sha256=_require(data, "sources", dict, name),
    )
