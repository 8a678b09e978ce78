"""Reference checks of migration 0006 planned per statement, not once per session.

PL/pgSQL caches the plan of a parameterless query for the life of the session. The
set-based reference checks of 0006 were therefore planned for whatever statement first
fired them: after a 2,000-row COPY that is a hash anti-join reading every row of
``operations``, which every later small insert (the group commit of a few callers) then
repeated, costing milliseconds per batch on a large ledger (measured: the hot-account
figure fell by half once the table held 120,000 operations). ``EXECUTE`` plans each
check against the transition table it actually has: an index probe per parent for a
small statement, a hash join for a large one.

Revision ID: 0007_ref_checks_replanned
Revises: 0006_perf
Create Date: 2026-11-22
"""

from core.migrations.sql import run_script

revision = "0007_ref_checks_replanned"
down_revision = "0006_perf"
branch_labels = None
depends_on = None

_ENTRIES = """
CREATE OR REPLACE FUNCTION valueos_entries_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE missing bigint;
BEGIN
    EXECUTE 'SELECT n.id FROM (SELECT DISTINCT operation_id AS id FROM new_entries) n
             WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = n.id) LIMIT 1'
        INTO missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry references a missing operation %', missing
            USING ERRCODE = 'foreign_key_violation', TABLE = 'ledger_entries',
                  CONSTRAINT = 'ledger_entries_operation_id_fkey';
    END IF;
    EXECUTE 'SELECT n.id FROM (SELECT DISTINCT account_id AS id FROM new_entries) n
             WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.id) LIMIT 1'
        INTO missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'ledger entry references a missing account %', missing
            USING ERRCODE = 'foreign_key_violation', TABLE = 'ledger_entries',
                  CONSTRAINT = 'ledger_entries_account_id_fkey';
    END IF;
    RETURN NULL;
END $$;
"""

_OPERATIONS = """
CREATE OR REPLACE FUNCTION valueos_operations_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE missing bigint;
BEGIN
    EXECUTE 'SELECT n.epoch FROM (SELECT DISTINCT epoch FROM new_operations
                                  WHERE epoch IS NOT NULL) n
             WHERE NOT EXISTS (SELECT 1 FROM epochs e WHERE e.id = n.epoch) LIMIT 1'
        INTO missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'operation references a missing epoch %', missing
            USING ERRCODE = 'foreign_key_violation', TABLE = 'operations',
                  CONSTRAINT = 'operations_epoch_fkey';
    END IF;
    RETURN NULL;
END $$;
"""

UPGRADE = _ENTRIES + _OPERATIONS


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    # the 0006 bodies (static SQL, plan cached per session)
    from importlib import import_module  # noqa: PLC0415 - the module name starts with a digit

    perf = import_module("core.migrations.versions.0006_perf")
    script: str = perf.UPGRADE
    start = script.index("CREATE FUNCTION valueos_entries_refs()")
    end = script.index("CREATE TRIGGER ledger_entries_refs")
    ops_start = script.index("CREATE FUNCTION valueos_operations_refs()")
    ops_end = script.index("CREATE TRIGGER operations_refs")
    body = script[start:end] + script[ops_start:ops_end]
    run_script(body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
