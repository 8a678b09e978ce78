"""Integrity alarms: stored data that no longer matches the anchored past.

``integrity_alarms`` holds one row per alarm raised by the sealer (balances derived from the
anchored previous epoch disagree with the rows), the self-audit (a sealed epoch rebuilt from
the rows, or its stored tree levels, differ from its roots or from the chain) or the write path
(a row in the way of the ledger's own sequence). While an alarm is not acknowledged, sealing,
anchoring of new epochs and bridge mints pause; acknowledging names who and why (audited).
An alarm that is already open is not raised twice (same source, epoch and detail).

``integrity_audits`` records each self-audit pass (epochs covered, entries, duration, outcome),
so ``/ready`` and the scheduler know when every sealed epoch was last checked.

Revision ID: 0013_integrity_alarms
Revises: 0012_bridge_redemptions
Create Date: 2026-11-29
"""

from core.migrations.sql import run_script

revision = "0013_integrity_alarms"
down_revision = "0012_bridge_redemptions"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE integrity_alarms (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source           text NOT NULL CHECK (source IN ('sealer', 'audit', 'writer')),
    epoch            bigint,
    detail           text NOT NULL,
    first_leaf       text,
    raised_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    ack_reason       text,
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL)),
    CHECK ((acknowledged_at IS NULL) = (ack_reason IS NULL))
);
CREATE UNIQUE INDEX integrity_alarms_open ON integrity_alarms
    (source, coalesce(epoch, -1), detail) WHERE acknowledged_at IS NULL;

CREATE TABLE integrity_audits (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_epoch  bigint,
    last_epoch   bigint,
    entries      bigint NOT NULL DEFAULT 0,
    seconds      double precision NOT NULL,
    ok           boolean NOT NULL,
    detail       text,
    finished_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

DOWNGRADE = """
DROP TABLE integrity_audits;
DROP TABLE integrity_alarms;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
