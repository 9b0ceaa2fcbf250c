"""A dataset is its content and its metadata: identical bytes under another kind, symbol,
timeframe or name are another dataset (they share the stored table).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 16:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IDENTITY = ["tenant", "version_hash", "kind", "symbol", "timeframe", "name"]


def upgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index("uq_datasets_tenant_hash")
        batch_op.create_index("uq_datasets_identity", IDENTITY, unique=True)


def downgrade() -> None:
    # Fails, as it must, when a tenant holds one content under several identities.
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index("uq_datasets_identity")
        batch_op.create_index("uq_datasets_tenant_hash", ["tenant", "version_hash"], unique=True)
