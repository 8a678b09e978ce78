"""The ``valueos`` command: thin wiring over the packages.

Each command lives in the package that owns it and is imported only when run, so
``valueos verify`` works without the API's or the worker's dependencies loaded. A
command module exposes ``main(command: str, argv: list[str]) -> int`` and parses its
own arguments (``valueos COMMAND --help``).
"""

from __future__ import annotations

import importlib
import logging
import sys

#: command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "valueos.run",
        "database, local chain, API and worker at once; Ctrl-C stops all",
    ),
    "migrate": ("valueos.ledger_commands", "apply the schema to DATABASE_URL or the embedded DB"),
    "demo": ("valueos.ledger_commands", "migrate, run a short ledger demo and reconcile"),
    "reconcile": ("valueos.ledger_commands", "prove cached balances equal their entries"),
    "serve": ("api.cli", "migrate and serve the HTTP API"),
    "create-user": ("api.cli", "create a user with a role and print a credential"),
    "create-api-key": ("api.cli", "create a scoped API key and print it once"),
    "worker": ("jobs.cli", "run the scheduled jobs (seal and anchor, expire holds, ...)"),
    "anchor": ("jobs.cli", "seal the open epoch and anchor it now"),
    "deploy-anchor": ("jobs.deploy", "deploy LedgerAnchor on ETH_RPC_URL (address to --out FILE)"),
    "deploy-token": ("jobs.deploy_token", "deploy an asset's ERC-20 bridge token and record it"),
    "deploy-stellar-asset": (
        "jobs.deploy_stellar_asset",
        "make an asset's Stellar asset and SAC and record it",
    ),
    "bridge": ("jobs.bridge_status", "bridge status: tokens, pauses, bridge-outs, redemptions"),
    "verify": ("chain.evm.verify", "verify a proof bundle offline (and on-chain with --rpc)"),
    "audit": ("jobs.audit", "self-audit: rebuild sealed epochs, compare with the chain; alarms"),
    "trust": ("jobs.trust", "trust export: the file auditors pin (chain id, contract, ledger id)"),
    "price-keygen": ("valueos.price_commands", "an ops price signer's Ed25519 key file"),
    "price-sign": ("valueos.price_commands", "a signed ops price round (the request body)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: valueos COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"valueos: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[command][0])
    code: int = module.main(command, rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
