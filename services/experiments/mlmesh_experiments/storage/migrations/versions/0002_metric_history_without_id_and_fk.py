"""metric_history: no surrogate id and no foreign key to runs.

Points are only inserted and read by (run, key) in step order, so the (run_id, key, step) index
is the only one they need; the id's sequence and primary-key index, and the per-row foreign-key
check (runs are never deleted, and the service checks the run before logging), cost
PostgreSQL more per logged point than the row itself.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# SQLite reflects the foreign key of 0001 without a name; batch mode names it by this.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _foreign_key() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "metric_history_run_id_fkey"  # PostgreSQL's own name for the unnamed one
    return "fk_metric_history_run_id_runs"


def upgrade() -> None:
    with op.batch_alter_table("metric_history", naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint(_foreign_key(), type_="foreignkey")
        batch_op.drop_column("id")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE metric_history ADD COLUMN id BIGSERIAL PRIMARY KEY")
        op.create_foreign_key(_foreign_key(), "metric_history", "runs", ["run_id"], ["id"])
        return
    with op.batch_alter_table("metric_history", recreate="always") as batch_op:
        batch_op.add_column(
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True, nullable=False)
        )
        batch_op.create_foreign_key(_foreign_key(), "runs", ["run_id"], ["id"])
