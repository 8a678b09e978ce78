"""The committed contract artifacts: they load, match the agreed ABI, and match a fresh build."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from chain.evm.artifacts import ArtifactError, available_artifacts, load_artifact

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "contracts" / "build.mjs"


def _node_with_solc() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the solcjs build cannot run")
    if not (ROOT / "node_modules" / "solc" / "package.json").is_file():
        pytest.fail("npm package solc is missing: run `npm install`")
    return node


def _run_build(node: str, script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Fixed script path and arguments under our control; no shell.
    return subprocess.run(  # noqa: S603
        [node, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _signatures(entries: list[dict[str, object]]) -> set[str]:
    out = set()
    for e in entries:
        inputs = e["inputs"]
        assert isinstance(inputs, list)
        out.add(f"{e['name']}({','.join(str(i['type']) for i in inputs)})")
    return out


@pytest.mark.unit
def test_ledger_anchor_artifact_has_the_agreed_interface() -> None:
    art = load_artifact("LedgerAnchor")
    assert "LedgerAnchor" in available_artifacts()
    assert art.deployable
    assert len(art.bytecode) > len(art.deployed_bytecode) > 1000
    assert {
        "anchor",
        "headerOf",
        "isAnchored",
        "genesisEpoch",
        "genesisHeader",
        "lastEpoch",
        "ledgerId",
        "verifyEntry",
        "verifyBalance",
        "entryLeaf",
        "balanceLeaf",
        "headerHash",
        "ANCHOR_ROLE",
        "grantRole",
        "revokeRole",
        "hasRole",
    } <= art.function_names
    assert {
        "anchor(uint64,bytes32,bytes32,bytes32,uint64,uint64,uint64)",
        "verifyEntry(tuple,bytes32[],uint64,uint64,uint64,bytes32,int256,int256)",
        "verifyBalance(tuple,bytes32[],uint64,uint64,bytes32,int256,uint64,bytes32)",
        "isAnchored(tuple)",
        "headerHash(tuple)",
        "headerOf(uint64)",
        "lastEpoch()",
    } <= _signatures(art.entries("function"))
    # one storage word per epoch: no public getter of stored roots
    assert "epochs" not in art.function_names
    (header,) = {
        i["internalType"]
        for i in next(e for e in art.entries("function") if e["name"] == "isAnchored")["inputs"]
    }
    assert header == "struct LedgerAnchor.Header"
    assert [
        c["type"]
        for c in next(e for e in art.entries("function") if e["name"] == "isAnchored")["inputs"][0][
            "components"
        ]
    ] == ["uint64", "bytes32", "bytes32", "bytes32", "uint64", "uint64", "uint64"]
    assert _signatures(art.entries("event")) >= {
        "Anchored(uint64,bytes32,bytes32,bytes32,uint64,uint64,uint64)"
    }
    assert {
        "EpochOutOfOrder(uint64,uint64)",
        "PrevHeaderMismatch(bytes32,bytes32)",
        "BadGenesis()",
        "AccessControlUnauthorizedAccount(address,bytes32)",
    } <= _signatures(art.entries("error"))
    (ctor,) = art.entries("constructor")
    assert [i["type"] for i in ctor["inputs"]] == ["bytes32", "address", "uint64", "bytes32"]


@pytest.mark.unit
def test_artifact_records_compiler_and_current_source() -> None:
    art = load_artifact("LedgerAnchor")
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    assert art.compiler_version.startswith(f"{pinned}+")
    assert art.compiler_settings["optimizer"] == {"enabled": True, "runs": 200}
    assert art.compiler_settings["evmVersion"] == "cancun"
    assert art.source_name == "contracts/LedgerAnchor.sol"
    # The committed artifact was built from the committed source (cheap check, no compiler).
    source = (ROOT / art.source_name).read_bytes()
    assert art.source_sha256[art.source_name] == hashlib.sha256(source).hexdigest()
    assert any(s.startswith("@openzeppelin/contracts/") for s in art.source_sha256)


@pytest.mark.unit
@pytest.mark.parametrize("name", ["../LedgerAnchor", "LedgerAnchor.json", "", "NoSuchContract"])
def test_load_artifact_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ArtifactError):
        load_artifact(name)


@pytest.mark.integration
def test_committed_artifacts_match_a_fresh_build() -> None:
    node = _node_with_solc()
    done = _run_build(node, BUILD, "--check")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


@pytest.mark.integration
def test_build_check_detects_a_stale_artifact(tmp_path: Path) -> None:
    """--check really compares: a copy of the tree with an edited artifact fails it."""
    node = _node_with_solc()
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    shutil.copytree(ROOT / "chain" / "evm" / "artifacts", tmp_path / "chain" / "evm" / "artifacts")
    shutil.copy(ROOT / "package.json", tmp_path / "package.json")
    (tmp_path / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    artifact = tmp_path / "chain" / "evm" / "artifacts" / "LedgerAnchor.json"
    data = json.loads(artifact.read_text())
    data["bytecode"] = data["bytecode"][:-2] + ("00" if data["bytecode"][-2:] != "00" else "01")
    artifact.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    done = _run_build(node, tmp_path / "contracts" / "build.mjs", "--check")
    assert done.returncode != 0
    assert "LedgerAnchor.json differs" in done.stderr

    # A plain build rewrites it, after which --check passes and the file equals the committed one.
    assert _run_build(node, tmp_path / "contracts" / "build.mjs").returncode == 0
    assert (
        artifact.read_bytes()
        == (ROOT / "chain" / "evm" / "artifacts" / "LedgerAnchor.json").read_bytes()
    )


@pytest.mark.unit
def test_bridge_token_artifact_has_the_agreed_interface() -> None:
    art = load_artifact("BridgeToken")
    assert art.deployable
    assert art.source_name == "contracts/BridgeToken.sol"
    assert {
        # the ledger side encodes mint(address,uint256,bytes32) by hand: it must not change
        "mint(address,uint256,bytes32)",
        "mintBatch(address[],uint256[],bytes32[])",
        "minted(bytes32)",
        "redeem(uint256,bytes32)",
        "setCaps(uint256,uint256,uint64)",
        "pause()",
        "unpause()",
        "decimals()",
        "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
        "MINTER_ROLE()",
        "PAUSER_ROLE()",
    } <= _signatures(art.entries("function"))
    assert {
        "Minted(bytes32,address,uint256)",
        "Redeemed(address,uint256,bytes32)",
        "CapsChanged(uint256,uint256,uint64)",
    } <= _signatures(art.entries("event"))
    assert {
        "ZeroAddress()",
        "ZeroAmount()",
        "BridgeIdUsed(bytes32)",
        "LengthMismatch()",
        "PerTransferCapExceeded(uint256,uint256)",
        "WindowCapExceeded(uint256,uint256)",
    } <= _signatures(art.entries("error"))
    (ctor,) = art.entries("constructor")
    assert [i["type"] for i in ctor["inputs"]] == [
        "string",
        "string",
        "uint8",
        "address",
        "uint256",
        "uint256",
        "uint64",
    ]
