"""Blockchain I/O. :mod:`chain.evm` talks to Ethereum (JSON-RPC via web3.py)."""
