"""Metric-history downsampling, shared by every service that returns a metric's history.

A chart of N pixel columns needs, per column, the points that set what it draws: the first and
the last (where the line enters and leaves) and the lowest and the highest (how far it swings).
`downsample` keeps exactly those per step bucket (M4 aggregation), so a single spike among a
million points survives, where even decimation would drop it. The SQL stores run the same rule
in the database (`buckets` and `bucket_of` give the arithmetic both share).

A store that keeps each metric's points pre-aggregated in aligned blocks of steps (the
experiments registry: `BLOCK_WIDTHS`) buckets whole blocks instead of points once a range spans
at least two per bucket (`block_width`): each block goes to the bucket of its first step in
the range, so bucket edges move to block edges (by less than half a bucket), and
every point drawn is still a real point, each bucket's extremes included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlmesh_common.errors import InvalidArgument

T = TypeVar("T")
# A point to log as (key, value, step, timestamp ms), and one metric's points as columns.
LoggedPoint = tuple[str, float, int, int]
Columns = tuple[list[float], list[int], list[int]]

# Points kept per bucket: first, min, max, last.
PER_BUCKET = 4
# Widths, in steps, of the aligned blocks a store may keep pre-aggregated (blocks start at
# multiples of their width): 64, then 16 times the one below, up to 2**34. No finer level: 64
# steps is where the writes' cost stops mattering (a 1,000-point batch touches 16 blocks of 64
# steps, 63 of 16), and a narrower range is cheap to bucket point by point.
FIRST_BLOCK_SHIFT = 6
BLOCK_SHIFT = 4
BLOCK_WIDTHS = tuple(1 << (FIRST_BLOCK_SHIFT + BLOCK_SHIFT * level) for level in range(8))
# Blocks per bucket, at least, for buckets of whole blocks: their edges then move by less than
# half a bucket, and a read takes between 2 and 32 blocks per bucket.
BLOCKS_PER_BUCKET = 2


def check_max_points(max_points: int) -> None:
    if max_points < 0:
        raise InvalidArgument(f"max_points must be >= 0, got {max_points}", reason="INVALID_LIMIT")


def check_step_range(start_step: int | None, end_step: int | None) -> None:
    if start_step is not None and end_step is not None and start_step > end_step:
        raise InvalidArgument(
            f"start_step ({start_step}) must not exceed end_step ({end_step})",
            reason="INVALID_STEP_RANGE",
        )


def in_step_range(
    points: Sequence[T], start_step: int | None, end_step: int | None, step: Callable[[T], int]
) -> list[T]:
    """The points whose step lies in [start_step, end_step] (either end open when None)."""
    low = -math.inf if start_step is None else start_step
    high = math.inf if end_step is None else end_step
    return [point for point in points if low <= step(point) <= high]


def buckets(max_points: int) -> int:
    """How many step buckets `max_points` pays for (at least one)."""
    return max(1, max_points // PER_BUCKET)


def bucket_of(step: int, first_step: int, last_step: int, count: int) -> int:
    """The bucket of `step`: `count` equal step intervals over [first_step, last_step]."""
    return (step - first_step) * count // (last_step - first_step + 1)


def block_width(first_step: int, last_step: int, max_points: int) -> int:
    """The widest of BLOCK_WIDTHS of which [first_step, last_step] spans at least
    BLOCKS_PER_BUCKET blocks per bucket; 1 (points, not blocks) when none does."""
    span = last_step - first_step + 1
    needed = BLOCKS_PER_BUCKET * buckets(max_points)
    fitting = [width for width in BLOCK_WIDTHS if span >= width * needed]
    return fitting[-1] if fitting else 1


def _finite(value: Any) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def downsample(
    points: Sequence[T],
    max_points: int,
    *,
    block: int = 1,
    step: Callable[[T], int] = lambda point: point.step,  # type: ignore[attr-defined]
    value: Callable[[T], float] = lambda point: point.value,  # type: ignore[attr-defined]
) -> list[T]:
    """At most `max_points` of `points` (ordered by step; 0: all of them): per step bucket its
    first, lowest, highest and last point, in their original order. NaN never counts as the
    lowest or highest. Below 4 points the extremes of the one bucket come first: min and max,
    then the last point, then the first. With `block` > 1 the buckets take whole blocks of
    `block` steps (aligned at multiples of it): a point goes to the bucket of its block's first
    step, or of the range's first step for the block that holds it."""
    check_max_points(max_points)
    if max_points == 0 or len(points) <= max_points:
        return list(points)
    count = buckets(max_points)
    first_step, last_step = step(points[0]), step(points[-1])
    # index of first, last, min, max per bucket
    chosen: dict[int, list[int]] = {}
    for index, point in enumerate(points):
        at = step(point)
        if block > 1:
            at = max(first_step, at - at % block)
        bucket = bucket_of(at, first_step, last_step, count)
        picks = chosen.get(bucket)
        if picks is None:
            chosen[bucket] = [index, index, index, index]
            continue
        picks[1] = index
        number = value(point)
        if _finite(number):
            low, high = value(points[picks[2]]), value(points[picks[3]])
            if not _finite(low) or number < low:
                picks[2] = index
            if not _finite(high) or number > high:
                picks[3] = index
    if max_points < PER_BUCKET:
        (first, last, low, high) = chosen[0]
        kept = list(dict.fromkeys([low, high, last, first]))[:max_points]
        return [points[i] for i in sorted(kept)]
    kept = sorted({index for picks in chosen.values() for index in picks})
    return [points[i] for i in kept]


def by_metric(points: Sequence[LoggedPoint]) -> dict[str, Columns]:
    """Per metric, in order of first appearance, its points' values, steps and timestamps: the
    columns of a log-batch `series` (each metric's points keep their order)."""
    columns: dict[str, Columns] = {}
    for key, value, step, timestamp in points:
        values, steps, timestamps = columns.setdefault(key, ([], [], []))
        values.append(value)
        steps.append(step)
        timestamps.append(timestamp)
    return columns
