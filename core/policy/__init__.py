"""The policy engine: documents and their pure evaluation (:mod:`core.policy.rules`), rolling
limits (:mod:`core.policy.limits`), what the write path loads per batch
(:mod:`core.policy.store`), and policy versions with the dry run (:mod:`core.policy.versions`).
"""
