"""metric_buckets: every metric history pre-aggregated in aligned blocks of 16**L steps
(L = 1..8), each with its count, first and last point and lowest and highest number, so that a
chart of a long history reads blocks instead of every point. Existing histories are backfilled:
level 1 from the points, each level above from the one below.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LEVELS = range(1, 9)
SHIFT = 4  # a block of level L holds 16 blocks of level L - 1
LARGEST = 1.7976931348623157e308  # finite numbers lie in [-LARGEST, LARGEST]
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
    history = sa.table(
        "metric_history",
        *(sa.column(name) for name in ("tenant", "run_id", "key", "step", "timestamp")),
        sa.column("value"),
        sa.column("is_nan"),
    )
    buckets = sa.table(
        "metric_buckets",
        *(sa.column(name) for name in ("tenant", "run_id", "key", "level", "block", "count")),
        *(sa.column(f"{pick}_{part}") for pick, parts in PICKS.items() for part in parts),
    )
    h = history.c
    number = sa.and_(sa.not_(h.is_nan), h.value.between(-LARGEST, LARGEST))
    point = {"step": h.step, "ts": h.timestamp, "nan": h.is_nan, "value": h.value}
    # The points as blocks of one point each (index: the step).
    source = sa.select(
        h.tenant,
        h.run_id,
        h.key,
        h.step.label("index"),
        sa.literal(1).label("count"),
        *(
            (point[part] if pick in ("first", "last") else sa.case((number, point[part]))).label(
                f"{pick}_{part}"
            )
            for pick, parts in PICKS.items()
            for part in parts
        ),
    ).subquery()
    bind = op.get_bind()
    for level in LEVELS:
        bind.execute(_merge_level(buckets, source, level))
        b = buckets.c
        source = (
            sa.select(
                b.tenant,
                b.run_id,
                b.key,
                b.block.label("index"),
                b.count,
                *(b[f"{pick}_{part}"] for pick, parts in PICKS.items() for part in parts),
            )
            .where(b.level == level)
            .subquery()
        )


def _merge_level(buckets: sa.TableClause, source: sa.Subquery, level: int):
    """INSERT the blocks of `level` from `source`'s blocks one level below (or points)."""
    s = source.c
    parent = s.index.op(">>")(SHIFT).label("parent")
    group = (s.tenant, s.run_id, s.key, parent)

    def rank(*order):
        return sa.func.row_number().over(partition_by=group, order_by=order)

    def of(pick: str) -> list:
        return [s[f"{pick}_{part}"] for part in PICKS[pick]]

    ranked = sa.select(
        source,
        parent,
        rank(*of("first")).label("is_first"),
        rank(*(column.desc() for column in of("last"))).label("is_last"),
        rank(s.low_value.asc().nulls_last(), s.low_step, s.low_ts).label("is_low"),
        rank(s.high_value.desc().nulls_last(), s.high_step, s.high_ts).label("is_high"),
    ).subquery()
    r = ranked.c

    def picked(pick: str, part: str):
        column = r[f"{pick}_{part}"]
        if part == "nan":
            column = sa.cast(column, sa.Integer)
        chosen = sa.func.max(sa.case((r[f"is_{pick}"] == 1, column)))
        return chosen == 1 if part == "nan" else chosen

    rows = sa.select(
        r.tenant,
        r.run_id,
        r.key,
        sa.literal(level),
        r.parent,
        sa.func.sum(r.count),
        *(picked(pick, part) for pick, parts in PICKS.items() for part in parts),
    ).group_by(r.tenant, r.run_id, r.key, r.parent)
    return sa.insert(buckets).from_select(
        ["tenant", "run_id", "key", "level", "block", "count"]
        + [f"{pick}_{part}" for pick, parts in PICKS.items() for part in parts],
        rows,
    )


def downgrade() -> None:
    op.drop_table("metric_buckets")
