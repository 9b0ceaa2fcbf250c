"""The metric_buckets pyramid: a batch's points aggregated into aligned blocks of steps at every
level (blocks of 64, 1024, ... 2**34 steps), the upsert that merges them into the stored blocks,
and the stored blocks read back as the points that a downsampled history needs."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import groupby, repeat
from operator import itemgetter
from typing import Any

from mlmesh_common.history import BLOCK_SHIFT, BLOCK_WIDTHS, FIRST_BLOCK_SHIFT
from mlmesh_experiments.entities import HistoryPoint, MetricPoint
from mlmesh_experiments.storage.models import metric_buckets

# A point in history order: (step, timestamp, is_nan, value), value 0.0 for NaN as stored.
Point = tuple[int, int, bool, float]
# A block: (index, count, first, last, lowest, highest); lowest and highest are None when the
# block holds no finite number.
Block = tuple[int, int, Point, Point, Point | None, Point | None]

LEVELS = range(1, len(BLOCK_WIDTHS) + 1)
_INF = math.inf
_step = itemgetter(0)
# The columns a block row sets, after tenant and run_id (the order of `rows`).
COLUMNS = tuple(column.name for column in metric_buckets.columns)[2:]
_FIRST = ("first_step", "first_ts", "first_nan", "first_value")
_LAST = ("last_step", "last_ts", "last_nan", "last_value")
_LOW = ("low_step", "low_ts", "low_value")
_HIGH = ("high_step", "high_ts", "high_value")


def level_of(width: int) -> int:
    return BLOCK_WIDTHS.index(width) + 1


def _value(point: Point) -> float:
    return point[3]


def _first_level(points: list[Point], lows: list[float], highs: list[float]) -> list[Block]:
    """The level-1 blocks of points in history order, with their values as candidates for the
    lowest (`lows`: +inf for a non-number) and the highest (`highs`: -inf for one). No Python
    call per point: a bisection finds each block's end, and min and max of a slice return its
    first extreme and list.index its first position, so ties go to the earliest point."""
    count, start = len(points), 0
    found: list[Block] = []
    while start < count:
        index = points[start][0] >> FIRST_BLOCK_SHIFT
        end = bisect_left(points, (index + 1) << FIRST_BLOCK_SHIFT, start, count, key=_step)
        low, high = min(lows[start:end]), max(highs[start:end])
        found.append(
            (
                index,
                end - start,
                points[start],
                points[end - 1],
                points[lows.index(low, start, end)] if low != _INF else None,
                points[highs.index(high, start, end)] if high != -_INF else None,
            )
        )
        start = end
    return found


def _merged(index: int, children: list[Block]) -> Block:
    """A block from its child blocks in step order."""
    lows = [child[4] for child in children if child[4] is not None]
    highs = [child[5] for child in children if child[5] is not None]
    return (
        index,
        sum(child[1] for child in children),
        children[0][2],
        children[-1][3],
        min(lows, key=_value) if lows else None,
        max(highs, key=_value) if highs else None,
    )


def _row(key: str, level: int, block: Block) -> tuple[Any, ...]:
    index, count, first, last, low, high = block
    low_pick = (low[0], low[1], low[3]) if low else (None, None, None)
    high_pick = (high[0], high[1], high[3]) if high else (None, None, None)
    return (key, level, index, count, *first, *last, *low_pick, *high_pick)


def rows(metrics: Sequence[MetricPoint]) -> list[tuple[Any, ...]]:
    """The blocks of a batch, one row per (key, level, block) in COLUMNS order, sorted by key,
    level and block (the order upserts lock them in, so that concurrent batches cannot
    deadlock)."""
    keys = {point[0] for point in metrics}
    found: list[tuple[Any, ...]] = []
    for key in sorted(keys):
        mine = metrics if len(keys) == 1 else [point for point in metrics if point[0] == key]
        _, values, steps, timestamps = zip(*mine, strict=True)
        if -_INF < sum(values) < _INF:  # no NaN, no infinity (the common case)
            points = sorted(zip(steps, timestamps, repeat(False), values, strict=False))
            lows = highs = [point[3] for point in points]
        else:
            points = sorted(
                (step, timestamp, value != value, 0.0 if value != value else value)
                for step, timestamp, value in zip(steps, timestamps, values, strict=True)
            )
            lows = [p[3] if not p[2] and -_INF < p[3] < _INF else _INF for p in points]
            highs = [-_INF if value == _INF else value for value in lows]
        blocks = _first_level(points, lows, highs)
        for level in LEVELS:
            if level > 1:
                blocks = [
                    _merged(index, list(group))
                    for index, group in groupby(blocks, key=lambda b: b[0] >> BLOCK_SHIFT)
                ]
            found.extend(_row(key, level, block) for block in blocks)
    return found


def _tuple(table: str, columns: Iterable[str]) -> str:
    return "(" + ", ".join(f"{table}.{column}" for column in columns) + ")"


def _merge_clause() -> str:
    """ON CONFLICT's SET: a stored block merged with the batch's (`excluded`), the same SQL on
    PostgreSQL and SQLite. Each pick keeps the stored point unless the batch's comes before it
    in that pick's order."""
    old, new = metric_buckets.name, "excluded"
    wins = {
        _FIRST: f"{_tuple(new, _FIRST)} < {_tuple(old, _FIRST)}",
        _LAST: f"{_tuple(new, _LAST)} >= {_tuple(old, _LAST)}",
        _LOW: f"{old}.low_value IS NULL OR ({new}.low_value, {new}.low_step, {new}.low_ts)"
        f" < ({old}.low_value, {old}.low_step, {old}.low_ts)",
        _HIGH: f"{old}.high_value IS NULL OR {new}.high_value > {old}.high_value"
        f" OR ({new}.high_value = {old}.high_value"
        f" AND ({new}.high_step, {new}.high_ts) < ({old}.high_step, {old}.high_ts))",
    }
    sets = [f"count = {old}.count + {new}.count"]
    for columns, condition in wins.items():
        sets += [
            f"{column} = CASE WHEN {condition} THEN {new}.{column} ELSE {old}.{column} END"
            for column in columns
        ]
    return (
        f"ON CONFLICT (run_id, key, level, block) DO UPDATE SET {', '.join(sets)}"
        f" WHERE {old}.tenant = {new}.tenant"
    )


MERGE = _merge_clause()
_NAMES = ", ".join(("tenant", "run_id", *COLUMNS))
# SQLite, one row per execution (executemany): tenant, run_id, then COLUMNS.
SQLITE_UPSERT = (
    f"INSERT INTO {metric_buckets.name} ({_NAMES})"
    f" VALUES ({', '.join('?' * (len(COLUMNS) + 2))}) {MERGE}"
)
_PG_TYPES = {
    "key": "varchar",
    "level": "smallint",
    "first_nan": "bool",
    "last_nan": "bool",
    "first_value": "float8",
    "last_value": "float8",
    "low_value": "float8",
    "high_value": "float8",
}


def pg_upsert(tenant: str, run_id: str, first: int) -> str:
    """PostgreSQL: every block of a batch in one statement, the columns as arrays bound from
    parameter `$first` on (tenant and run_id at `tenant` and `run_id`)."""
    arrays = ", ".join(
        f"${first + i}::{_PG_TYPES.get(column, 'bigint')}[]" for i, column in enumerate(COLUMNS)
    )
    return (
        f"INSERT INTO {metric_buckets.name} ({_NAMES})"
        f" SELECT {tenant}, {run_id}, * FROM unnest({arrays}) {MERGE}"
    )


# The columns `stored` reads, in its order.
STORED = ("block", "count", *_FIRST, *_LAST, *_LOW, *_HIGH)


def stored(row: Sequence[Any]) -> Block:
    """A block from metric_buckets' STORED columns."""
    (
        index,
        count,
        fs,
        ft,
        fn,
        fv,
        ls,
        lt,
        ln,
        lv,
        low_step,
        low_ts,
        low,
        high_step,
        high_ts,
        high,
    ) = row
    return (
        index,
        count,
        (fs, ft, bool(fn), fv),
        (ls, lt, bool(ln), lv),
        None if low is None else (low_step, low_ts, False, low),
        None if high is None else (high_step, high_ts, False, high),
    )


def single(index: int, point: Point) -> Block:
    """One point as a block of its own, `index` that of the block it lies in."""
    number = point if not point[2] and -_INF < point[3] < _INF else None
    return index, 1, point, point, number, number


def bucketed(
    blocks: Iterable[Block], first: int, last: int, count: int, width: int
) -> list[HistoryPoint]:
    """The first, last, lowest and highest point of each of `count` buckets over [first, last],
    each block in the bucket of its first step in the range (mlmesh_common.history.downsample's
    rule with `block=width`), in history order."""
    span = last - first + 1
    chosen: dict[int, list[Point | None]] = {}
    for index, _, head, tail, low, high in blocks:
        bucket = (max(first, index * width) - first) * count // span
        picks = chosen.get(bucket)
        if picks is None:
            chosen[bucket] = [head, tail, low, high]
            continue
        if head < picks[0]:
            picks[0] = head
        if tail > picks[1]:
            picks[1] = tail
        kept = picks[2]
        if low is not None and (
            kept is None or (low[3], low[0], low[1]) < (kept[3], kept[0], kept[1])
        ):
            picks[2] = low
        kept = picks[3]
        if high is not None and (
            kept is None or (-high[3], high[0], high[1]) < (-kept[3], kept[0], kept[1])
        ):
            picks[3] = high
    picked = {point for picks in chosen.values() for point in picks if point is not None}
    return [
        HistoryPoint(step, timestamp, math.nan if is_nan else value)
        for step, timestamp, is_nan, value in sorted(picked)
    ]
