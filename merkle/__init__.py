"""Pure hashing: OpenZeppelin-compatible Merkle trees (:mod:`merkle.tree`) and the ledger's leaf
encodings and epoch header (:mod:`merkle.leaves`). No I/O and no imports from the rest of the
project, so ``core`` and ``chain`` can both depend on it."""
