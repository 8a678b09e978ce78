"""An index on ``policy_usage.bucket``, for the worker's pruning of expired buckets.

``core.policy_store.prune_usage`` deletes the buckets older than the longest limit window
(30 days); the index keeps that a range scan instead of a full scan of the table.

Revision ID: 0009_policy_usage_pruning
Revises: 0008_lean_entries
Create Date: 2026-11-22
"""

from core.migrations.sql import run_script

revision = "0009_policy_usage_pruning"
down_revision = "0008_lean_entries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_script("CREATE INDEX policy_usage_bucket ON policy_usage (bucket);")


def downgrade() -> None:
    run_script("DROP INDEX policy_usage_bucket;")
