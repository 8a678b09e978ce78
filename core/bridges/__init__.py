"""The ledger side of the bridges: tokens (:mod:`core.bridges.tokens`) and the ERC-20
bridge-out use case with its settlement (:mod:`core.bridges.erc20`)."""
