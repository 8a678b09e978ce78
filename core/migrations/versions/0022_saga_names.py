"""A saga is called a saga in the schema: ``sagas`` and ``operations.saga_id``.

Over HTTP a saga is still a "transaction" (``/api/v1/transactions``, ``transaction_id``);
inside the service "transaction" means a database transaction only.

Revision ID: 0022_saga_names
Revises: 0021_risk_event_per_operation
Create Date: 2026-12-07
"""

from core.migrations.sql import run_script

revision = "0022_saga_names"
down_revision = "0021_risk_event_per_operation"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE transactions RENAME TO sagas;
ALTER INDEX transactions_pkey RENAME TO sagas_pkey;
ALTER INDEX transactions_external_ref RENAME TO sagas_external_ref;
ALTER INDEX transactions_owner RENAME TO sagas_owner;
ALTER TABLE sagas RENAME CONSTRAINT transactions_type_check TO sagas_type_check;
ALTER TABLE sagas RENAME CONSTRAINT transactions_status_check TO sagas_status_check;
ALTER TABLE sagas RENAME CONSTRAINT transactions_owner_id_fkey TO sagas_owner_id_fkey;
ALTER TABLE operations RENAME COLUMN transaction_id TO saga_id;
ALTER INDEX operations_transaction RENAME TO operations_saga;
ALTER TABLE operations RENAME CONSTRAINT operations_transaction_id_fkey TO operations_saga_id_fkey;
"""

DOWNGRADE = """
ALTER TABLE operations RENAME CONSTRAINT operations_saga_id_fkey TO operations_transaction_id_fkey;
ALTER INDEX operations_saga RENAME TO operations_transaction;
ALTER TABLE operations RENAME COLUMN saga_id TO transaction_id;
ALTER TABLE sagas RENAME CONSTRAINT sagas_owner_id_fkey TO transactions_owner_id_fkey;
ALTER TABLE sagas RENAME CONSTRAINT sagas_status_check TO transactions_status_check;
ALTER TABLE sagas RENAME CONSTRAINT sagas_type_check TO transactions_type_check;
ALTER INDEX sagas_owner RENAME TO transactions_owner;
ALTER INDEX sagas_external_ref RENAME TO transactions_external_ref;
ALTER INDEX sagas_pkey RENAME TO transactions_pkey;
ALTER TABLE sagas RENAME TO transactions;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
