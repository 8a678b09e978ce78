"""Stellar I/O: the Soroban RPC client of the bridge (:mod:`chain.stellar.client`) and the
local Soroban RPC stand-in, a test double (:mod:`chain.stellar.standin`)."""
