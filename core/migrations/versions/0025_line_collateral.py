"""Credit lines holding several collateral assets.

A line keeps its own collateral asset and account (``credit_lines.collateral_asset`` and
``collateral_account_id``, whose parameters give the line's debt asset, buffer, APR and the
position's sale rules); ``credit_line_collateral`` holds the further assets it was given, each
in its own COLLATERAL account, with its own stop-loss. ``credit_lines.multi_collateral`` marks a
line with any: the value of such a line depends on several prices, so its row in
``credit_line_triggers`` (one price per line) is kept closed and the risk tick reads those lines
by a set-based scan of their own (``core.risk.loop``).

A user may now hold several COLLATERAL accounts of one asset (the line's own wBTC, and wBTC
given to another line): the accounts belong to their lines, which the two tables record with
UNIQUE account ids.

Revision ID: 0025_line_collateral
Revises: 0024_commitments_by_epoch
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0025_line_collateral"
down_revision = "0024_commitments_by_epoch"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE credit_lines ADD COLUMN multi_collateral boolean NOT NULL DEFAULT false;

CREATE TABLE credit_line_collateral (
    line_id           bigint NOT NULL REFERENCES credit_lines (id),
    asset             text NOT NULL REFERENCES assets (code),
    account_id        bigint NOT NULL UNIQUE REFERENCES accounts (id),
    stop_loss_answer  numeric(78, 0) CHECK (stop_loss_answer > 0),
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (line_id, asset)
);
CREATE INDEX credit_line_collateral_asset ON credit_line_collateral (asset);
CREATE INDEX credit_lines_multi ON credit_lines (id) WHERE multi_collateral;

DROP INDEX accounts_compartment_key;
CREATE UNIQUE INDEX accounts_compartment_key ON accounts (owner_id, asset, kind)
    WHERE kind IN ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT');

-- a line of several assets is read by the tick's scan, not through its trigger row
CREATE OR REPLACE FUNCTION valueos_risk_recompute(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM credit_line_triggers WHERE line_id = ANY(ids) ORDER BY line_id FOR UPDATE;
    UPDATE credit_line_triggers t
    SET open = l.status = 'OPEN' AND NOT l.multi_collateral,
        exposure = cb.pending - cb.posted, collateral = c.posted,
        stop_loss_answer = l.stop_loss_answer,
        trigger = valueos_risk_trigger(cb.pending - cb.posted, c.posted, l.stop_loss_answer,
                                       p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM credit_lines l
    JOIN balances cb ON cb.account_id = l.credit_account_id
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id
    WHERE t.line_id = l.id AND l.id = ANY(ids);
END $$;

DROP TRIGGER credit_lines_risk_changed ON credit_lines;
CREATE TRIGGER credit_lines_risk_changed
    AFTER UPDATE OF stop_loss_answer, status, multi_collateral ON credit_lines FOR EACH ROW
    WHEN (OLD.stop_loss_answer IS DISTINCT FROM NEW.stop_loss_answer
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.multi_collateral IS DISTINCT FROM NEW.multi_collateral)
    EXECUTE FUNCTION valueos_risk_line_changed();
"""

DOWNGRADE = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM credit_line_collateral) THEN
        RAISE EXCEPTION 'credit lines hold further collateral assets: withdraw them first';
    END IF;
END $$;

DROP TRIGGER credit_lines_risk_changed ON credit_lines;
CREATE TRIGGER credit_lines_risk_changed AFTER UPDATE OF stop_loss_answer, status
    ON credit_lines FOR EACH ROW
    WHEN (OLD.stop_loss_answer IS DISTINCT FROM NEW.stop_loss_answer
          OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION valueos_risk_line_changed();

CREATE OR REPLACE FUNCTION valueos_risk_recompute(ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM credit_line_triggers WHERE line_id = ANY(ids) ORDER BY line_id FOR UPDATE;
    UPDATE credit_line_triggers t
    SET open = l.status = 'OPEN', exposure = cb.pending - cb.posted, collateral = c.posted,
        stop_loss_answer = l.stop_loss_answer,
        trigger = valueos_risk_trigger(cb.pending - cb.posted, c.posted, l.stop_loss_answer,
                                       p.margin_call_bps, da.scale, ca.scale, b.decimals)
    FROM credit_lines l
    JOIN balances cb ON cb.account_id = l.credit_account_id
    JOIN balances c ON c.account_id = l.collateral_account_id
    JOIN assets ca ON ca.code = l.collateral_asset
    JOIN assets da ON da.code = l.debt_asset
    LEFT JOIN risk_trigger_basis b ON b.asset = l.collateral_asset
    LEFT JOIN risk_parameters p ON p.id = b.params_id
    WHERE t.line_id = l.id AND l.id = ANY(ids);
END $$;

-- fails while a user holds two COLLATERAL accounts of one asset (move them first)
DROP INDEX accounts_compartment_key;
CREATE UNIQUE INDEX accounts_compartment_key ON accounts (owner_id, asset, kind)
    WHERE kind IN ('AVAILABLE', 'BLOCKED', 'LOCKED', 'CREDIT', 'COLLATERAL');

DROP INDEX credit_lines_multi;
DROP TABLE credit_line_collateral;
ALTER TABLE credit_lines DROP COLUMN multi_collateral;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
