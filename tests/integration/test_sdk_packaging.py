"""The SDK as its distributions ship it: ``sdk/`` (valueos-sdk) and ``merkle/``
(valueos-merkle, which the SDK requires) are built from copies of their directories with the
setuptools already here (no network, no index), their contents placed in a fresh virtual
environment that holds no code of this repository, and the SDK's proof verification run
there.

Third-party dependencies (httpx, eth-abi, ...) come from this interpreter's site-packages
through a ``.pth`` of links that leaves out this repository's editable install. About 4 s."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("__editable__", "valueos-", "valueos_", "_distutils_hack", "__pycache__")

CHECK = """
import importlib.metadata as md, json, sys
from valueos_sdk.errors import MirrorMismatch
from valueos_sdk.proofs import check_entry_bundle
import merkle.tree
try:
    check_entry_bundle({}, account_id=1, entry=(1, 1, "MINT", 1, 1), asset="X")
except MirrorMismatch as exc:
    refused = str(exc)
leaf = merkle.tree.keccak256(b"leaf")
try:
    import core  # noqa: F401
    server = True
except ImportError:
    server = False
print(json.dumps({
    "sdk": __import__("valueos_sdk").__file__, "merkle": merkle.__file__,
    "requires": md.requires("valueos-sdk"), "merkle_dist": md.version("valueos-merkle"),
    "refused": refused, "verified": merkle.tree.verify(leaf, leaf, []), "server": server,
}))
"""


def _build(source: Path, work: Path) -> tuple[Path, Path]:
    """setuptools' own build of the distribution at ``source``: (its files, its metadata)."""
    lib, meta = work / "lib", work / "meta"
    meta.mkdir(parents=True)
    subprocess.run(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-W", "ignore", "-c", "from setuptools import setup; setup()", "-q",
         "egg_info", "--egg-base", str(meta), "build_py", "--build-lib", str(lib)],
        cwd=source, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return lib, meta


def test_the_sdk_and_the_merkle_distributions_verify_proofs_without_the_repository(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    for name in ("merkle", "sdk"):
        shutil.copytree(
            ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    venv = tmp_path / "venv"
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(  # noqa: S603
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    for name in ("merkle", "sdk"):  # what an installer puts in purelib
        lib, meta = _build(src / name, tmp_path / f"build-{name}")
        shutil.copytree(lib, site, dirs_exist_ok=True)
        shutil.copytree(meta, site, dirs_exist_ok=True)
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(FIRST_PARTY) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    for ours in ("merkle", "valueos_sdk", "core", "api"):
        assert not (deps / ours).exists()
    (site / "deps.pth").write_text(f"{deps}\n")

    done = subprocess.run(  # noqa: S603
        [str(python), "-I", "-c", CHECK], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["sdk"].startswith(str(site)) and seen["merkle"].startswith(str(site))
    assert "valueos-merkle==0.1.0" in seen["requires"] and seen["merkle_dist"] == "0.1.0"
    assert seen["refused"] == "not an entry proof bundle (version 1)"
    assert seen["verified"] is True
    assert seen["server"] is False  # no server code reached the environment
