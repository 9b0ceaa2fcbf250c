"""Min/max-bucket downsampling of metric histories (mlmesh_common.history): a spike survives,
the budget holds, and every bucket's extremes are kept, checked against a brute-force bucketing."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlmesh_common import history
from mlmesh_common.errors import InvalidArgument


class P(NamedTuple):
    step: int
    value: float


def series(values, start=0):
    return [P(start + i, v) for i, v in enumerate(values)]


def test_one_spike_among_a_million_points_survives():
    n, spike, dip = 1_000_000, 654_321, 123_457
    points = [P(i, math.sin(i / 5000)) for i in range(n)]
    points[spike] = P(spike, 1e6)
    points[dip] = P(dip, -1e6)
    sampled = history.downsample(points, 1000)
    assert len(sampled) <= 1000
    assert P(spike, 1e6) in sampled and P(dip, -1e6) in sampled
    assert sampled[0] == points[0] and sampled[-1] == points[-1]
    assert [p.step for p in sampled] == sorted({p.step for p in sampled})
    # Even decimation (every 1000th point) would have drawn neither.
    assert all(abs(p.value) <= 1 for p in points[::1000])


def brute_force(points, max_points):
    """Each bucket's first, last, lowest and highest point, by the definition."""
    count = history.buckets(max_points)
    first, last = points[0].step, points[-1].step
    groups: dict[int, list[int]] = {}
    for index, point in enumerate(points):
        groups.setdefault(history.bucket_of(point.step, first, last, count), []).append(index)
    kept = set()
    for indices in groups.values():
        finite = [i for i in indices if math.isfinite(points[i].value)] or indices[:1]
        low = min(finite, key=lambda i: (points[i].value, i))
        high = max(finite, key=lambda i: (points[i].value, -i))
        kept |= {indices[0], indices[-1], low, high}
    return [points[i] for i in sorted(kept)]


@given(
    st.lists(st.one_of(st.floats(-1e9, 1e9), st.just(math.nan)), min_size=0, max_size=400),
    st.integers(4, 120),
    st.integers(1, 7),
)
def test_buckets_keep_first_last_lowest_highest(values, max_points, stride):
    points = [P(i * stride, v) for i, v in enumerate(values)]
    sampled = history.downsample(points, max_points)
    if len(points) <= max_points:
        assert sampled == points
        return
    assert len(sampled) <= max_points
    assert sampled == brute_force(points, max_points)


@pytest.mark.parametrize(
    "max_points, expected",
    [(1, [1]), (2, [1, 5]), (3, [1, 5, 9])],
)
def test_under_four_points_the_extremes_come_first(max_points, expected):
    # values: low at index 1, high at index 5, last index 9
    points = series([0.5, -3, 0.1, 0.2, 0.3, 7, 0.4, 0.2, 0.1, 0.0])
    assert [p.step for p in history.downsample(points, max_points)] == sorted(expected)


def test_nan_is_never_an_extreme_while_a_bucket_has_numbers():
    points = series([math.nan, 1.0, math.nan, 5.0, -2.0, math.nan] * 10)
    sampled = history.downsample(points, 4)
    finite = [p.value for p in sampled if not math.isnan(p.value)]
    assert 5.0 in finite and -2.0 in finite and len(sampled) <= 4


def test_step_range_and_bad_arguments():
    points = series(range(10))
    assert [p.step for p in history.in_step_range(points, 3, 5, lambda p: p.step)] == [3, 4, 5]
    assert len(history.in_step_range(points, None, 2, lambda p: p.step)) == 3
    assert len(history.in_step_range(points, 8, None, lambda p: p.step)) == 2
    with pytest.raises(InvalidArgument):
        history.downsample(points, -1)
    with pytest.raises(InvalidArgument):
        history.check_step_range(5, 4)
    history.check_step_range(4, 4)
