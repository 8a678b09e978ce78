"""Ethereum I/O: the local anvil, compiled contract artifacts, the LedgerAnchor binding, signer
settings and the auditor's ``verify`` command."""
