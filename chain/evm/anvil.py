"""Start and stop a local anvil node, for the chain tests and for local runs.

anvil is the local Ethereum node of Foundry, installed from npm (``@foundry-rs/anvil``, see
package.json). :func:`start_anvil` launches it on a free port chosen by the kernel (``--port 0``;
anvil reports the bound address in its log, so there is no pick-then-bind race), waits until its
JSON-RPC answers (polling with a bounded deadline, never a blind sleep) and returns an
:class:`AnvilNode` whose :meth:`~AnvilNode.stop` terminates it (SIGTERM, then SIGKILL after a
grace period). A node left running is stopped when the interpreter exits normally; anvil stays
in its parent's process group, so a Ctrl-C or a kill of the whole group reaches it too.

This module never holds a key: anvil's dev accounts and their keys are whatever anvil itself
reports in its ``--config-out`` file (:attr:`AnvilNode.config_path`).

Run ``python -m chain.evm.anvil`` to keep a node running in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "AnvilError",
    "AnvilNode",
    "find_anvil",
    "rpc_call",
    "running_anvil",
    "start_anvil",
    "wait_for_rpc",
]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STARTUP_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
# How often the startup loop re-checks the log and the RPC. The wait between checks is a
# Popen.wait on the process itself, so a crash during startup ends the wait at once.
_POLL_INTERVAL = 0.05
_LISTENING = re.compile(r"Listening on (\S+):(\d+)")
_LOG_TAIL_CHARS = 4000


class AnvilError(RuntimeError):
    """anvil could not be found, did not start, or did not answer in time."""


def find_anvil(root: Path | None = None) -> Path | None:
    """Locate the anvil executable, or return None.

    Order: ``$ANVIL_BIN``; the native binary of the npm package under ``node_modules`` (the
    platform package ``@foundry-rs/anvil-<os>-<arch>`` that ``node_modules/.bin/anvil`` would
    spawn: started directly, there is no node wrapper process in between, so the process we
    signal is anvil itself); the ``node_modules/.bin/anvil`` wrapper (it forwards SIGTERM to the
    binary); ``anvil`` on PATH.
    """
    env = os.environ.get("ANVIL_BIN")
    if env:
        return Path(env)
    base = root if root is not None else PROJECT_ROOT
    modules = base / "node_modules"
    native = sorted((modules / "@foundry-rs").glob("anvil-*/bin/anvil"))
    candidates = [*native, modules / ".bin" / "anvil"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def rpc_call(url: str, method: str, params: Sequence[Any] = (), *, timeout: float = 5.0) -> Any:
    """One JSON-RPC call over HTTP; returns ``result`` or raises AnvilError on an RPC error."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        raise AnvilError(f"not an http(s) JSON-RPC URL: {url!r}")
    conn_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_type(parts.hostname, parts.port, timeout=timeout)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    try:
        conn.request(
            "POST", parts.path or "/", body=body, headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    if not isinstance(payload, dict):
        raise AnvilError(f"{method}: malformed JSON-RPC response {payload!r}")
    if "error" in payload:
        raise AnvilError(f"{method}: {payload['error']}")
    return payload.get("result")


def _answers(url: str, timeout: float) -> bool:
    try:
        return rpc_call(url, "eth_chainId", timeout=timeout) is not None
    except (OSError, http.client.HTTPException, ValueError, AnvilError):
        return False


def wait_for_rpc(url: str, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
    """Block until ``url`` answers ``eth_chainId``; AnvilError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not _answers(url, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            raise AnvilError(f"no JSON-RPC answer from {url} within {timeout:.1f}s")
        time.sleep(_POLL_INTERVAL)


@dataclass(eq=False)
class AnvilNode:
    """A running anvil process that this module started."""

    rpc_url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        """anvil's stdout and stderr."""
        return self.workdir / "anvil.log"

    @property
    def config_path(self) -> Path:
        """anvil's own ``--config-out`` JSON (dev accounts, keys, mnemonic, fees)."""
        return self.workdir / "config.json"

    def config(self) -> dict[str, Any]:
        """The parsed ``--config-out`` file that anvil wrote at startup."""
        data = json.loads(self.config_path.read_text())
        if not isinstance(data, dict):
            raise AnvilError(f"unexpected anvil config in {self.config_path}")
        return data

    @property
    def accounts(self) -> list[str]:
        """Addresses of anvil's unlocked dev accounts."""
        return [str(a) for a in self.config().get("available_accounts", [])]

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Terminate anvil (SIGTERM, SIGKILL after ``timeout``), reap it, remove its files.

        Idempotent. Only this node's own process is signalled, by its pid.
        """
        if self._stopped:
            return
        self._stopped = True
        _live_nodes.discard(self)
        try:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=timeout)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        # Only while the process is unreaped, so its pid cannot have been reused.
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def __enter__(self) -> AnvilNode:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# Nodes started and not yet stopped; strong references, so a node whose owner dropped it
# is still stopped at interpreter exit instead of leaking a process.
_live_nodes: set[AnvilNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    for node in list(_live_nodes):
        node.stop()


def start_anvil(
    *,
    binary: Path | str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    chain_id: int | None = None,
    hardfork: str | None = None,
    accounts: int | None = None,
    extra_args: Sequence[str] = (),
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> AnvilNode:
    """Start anvil and return once its JSON-RPC answers.

    ``port=0`` (the default) lets the kernel pick a free port. Raises AnvilError if anvil is not
    found, exits during startup, or does not answer within ``startup_timeout`` seconds; the
    process is stopped before raising.
    """
    exe = Path(binary) if binary is not None else find_anvil()
    if exe is None:
        raise AnvilError(
            "anvil not found: run `npm install` (package @foundry-rs/anvil) or set ANVIL_BIN"
        )
    workdir = Path(tempfile.mkdtemp(prefix="valueos-anvil-"))
    args = [str(exe), "--host", host, "--port", str(port)]
    args += ["--config-out", str(workdir / "config.json"), "--color", "never"]
    if chain_id is not None:
        args += ["--chain-id", str(chain_id)]
    if hardfork is not None:
        args += ["--hardfork", hardfork]
    if accounts is not None:
        args += ["--accounts", str(accounts)]
    args += list(extra_args)

    log_path = workdir / "anvil.log"
    try:
        with log_path.open("wb") as log:
            # The arguments are built above from typed parameters; no shell is involved.
            process = subprocess.Popen(  # noqa: S603
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise AnvilError(f"cannot execute {exe}: {exc}") from exc

    node = AnvilNode(rpc_url="", process=process, workdir=workdir)
    _live_nodes.add(node)
    try:
        node.rpc_url = _await_ready(node, startup_timeout)
    except BaseException:
        node.stop()
        raise
    return node


def _await_ready(node: AnvilNode, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    url: str | None = None
    while True:
        code = node.process.poll()
        if code is not None:
            raise AnvilError(f"anvil exited with code {code} during startup:\n{node.log_tail()}")
        if url is None:
            match = _LISTENING.search(node.log_tail(chars=1 << 20))
            if match:
                url = f"http://{match.group(1)}:{match.group(2)}"
        remaining = deadline - time.monotonic()
        if url is not None and _answers(url, timeout=max(0.1, min(2.0, remaining))):
            return url
        if remaining <= 0:
            raise AnvilError(
                f"anvil did not answer within {timeout:.1f}s (url: {url}):\n{node.log_tail()}"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=min(_POLL_INTERVAL, max(remaining, 0.001)))


@contextlib.contextmanager
def running_anvil(**kwargs: Any) -> Iterator[AnvilNode]:
    """``with running_anvil() as node:`` — start_anvil(**kwargs), always stopped on exit."""
    node = start_anvil(**kwargs)
    try:
        yield node
    finally:
        node.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chain.evm.anvil", description="Run a local anvil node until Ctrl-C."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--chain-id", type=int, default=None)
    parser.add_argument("--hardfork", default=None)
    ns = parser.parse_args(argv)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the node is stopped and its files removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    with running_anvil(
        host=ns.host, port=ns.port, chain_id=ns.chain_id, hardfork=ns.hardfork
    ) as node:
        sys.stdout.write(f"anvil (pid {node.pid}) listening on {node.rpc_url}\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            node.process.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
