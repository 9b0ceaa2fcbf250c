"""Tenant on every row: run tags, params, latest metrics, metric history and artifacts carry their
run's tenant, and the store filters them by it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 21:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("run_tags", "run_params", "latest_metrics", "metric_history", "artifacts")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("tenant", sa.String(length=63), nullable=False, server_default="")
        )
        # Runs are never deleted, so every row finds its run (COALESCE only for safety).
        op.execute(
            f"UPDATE {table} SET tenant = COALESCE("
            f"(SELECT runs.tenant FROM runs WHERE runs.id = {table}.run_id), '')"
        )
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("tenant", server_default=None)


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("tenant")
