"""Tasks are held under a lease: the replica running a task (`owner`), until when it holds it
unless it renews (`lease_expires_at`, epoch ms) and how many times it was started (`attempt`).
Tasks left PENDING or RUNNING by a service that predates leases hold a lapsed lease (0), so the
first replica to scan takes them over.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 19:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner", sa.String(length=128), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("attempt")
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("owner")
