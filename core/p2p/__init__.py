"""P2P requests: a requester asks a payer for funds; the payer settles or declines, the
requester cancels, the expiry job expires.

State machine (also enforced by a trigger in the database)::

    PENDING --settle--> SETTLING --posted--> SETTLED
       |                   `--definite failure--> PENDING (attempt + 1)
       +--decline--> DECLINED   +--cancel--> CANCELLED   +--expiry--> EXPIRED

The code lives in two modules; this one is the stable import path (``from core import
p2p``) for the API, the jobs and the tests:

- ``core.p2p.requests``: the rules, states and rows; create, get, list.
- ``core.p2p.transitions``: everything that leaves PENDING, above all the exactly-once
  settlement path (claim, post, finish, ``resume_settling``), and decline, cancel,
  expiry.
"""

from __future__ import annotations

from core.p2p.requests import (
    COLUMNS,
    MAX_MEMO,
    P2PPage,
    P2PRequest,
    P2PStatus,
    Party,
    create_request,
    from_row,
    get_request,
    list_requests,
    validate_request,
)
from core.p2p.transitions import (
    Settlement,
    cancel,
    decline,
    expire_due,
    resume_settling,
    settle,
    settlement_command,
    settlement_key,
)

#: the historical private names (the crash-recovery tests build rows with them)
_COLUMNS = COLUMNS
_request = from_row

__all__ = [
    "COLUMNS",
    "MAX_MEMO",
    "P2PPage",
    "P2PRequest",
    "P2PStatus",
    "Party",
    "Settlement",
    "cancel",
    "create_request",
    "decline",
    "expire_due",
    "from_row",
    "get_request",
    "list_requests",
    "resume_settling",
    "settle",
    "settlement_command",
    "settlement_key",
    "validate_request",
]
