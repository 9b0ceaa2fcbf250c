"""metric_buckets: every metric history pre-aggregated in aligned blocks of 64 * 16**(L-1)
steps (L = 1..8), each with its count, first and last point and lowest and highest number, so that a
chart of a long history reads blocks instead of every point. Existing histories are backfilled
through the same merge as logged points (mlmesh_experiments.storage.blocks), a chunk of points at
a time in any order: the merge is order-free, so memory stays bounded whatever the histories.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

from mlmesh_experiments.storage import blocks

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Points per backfill chunk.
CHUNK = 50_000
PICKS = {
    "first": ("step", "ts", "nan", "value"),
    "last": ("step", "ts", "nan", "value"),
    "low": ("step", "ts", "value"),
    "high": ("step", "ts", "value"),
}


def _columns() -> list[sa.Column]:
    """The picks' columns; the lowest and highest are NULL in a block without a number."""
    types = {"step": sa.BigInteger(), "ts": sa.BigInteger(), "nan": sa.Boolean()}
    return [
        sa.Column(
            f"{pick}_{part}",
            types.get(part, sa.Float(precision=53)),
            nullable=pick not in ("first", "last"),
        )
        for pick, parts in PICKS.items()
        for part in parts
    ]


def upgrade() -> None:
    op.create_table(
        "metric_buckets",
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        *_columns(),
        sa.PrimaryKeyConstraint("run_id", "key", "level", "block"),
    )
    names = ("tenant", "run_id", *blocks.COLUMNS)
    upsert = sa.text(
        f"INSERT INTO metric_buckets ({', '.join(names)})"
        f" VALUES ({', '.join(':' + name for name in names)}) {blocks.MERGE}"
    )
    everything = sa.text(
        'SELECT tenant, run_id, key, step, "timestamp", value, is_nan FROM metric_history'
    )
    points = op.get_bind().execute(
        everything.execution_options(stream_results=True, yield_per=CHUNK)
    )
    for chunk in points.partitions():
        by_run: dict[tuple[str, str], list[tuple]] = {}
        for tenant, run_id, key, step, timestamp, value, is_nan in chunk:
            point = (key, math.nan if is_nan else value, step, timestamp)
            by_run.setdefault((tenant, run_id), []).append(point)
        rows = [
            dict(zip(names, (tenant, run_id, *row), strict=True))
            for (tenant, run_id), logged in by_run.items()
            for row in blocks.rows(logged)
        ]
        op.get_bind().execute(upsert, rows)


def downgrade() -> None:
    op.drop_table("metric_buckets")
