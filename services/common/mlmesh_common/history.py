"""Metric-history downsampling, shared by every service that returns a metric's history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from mlmesh_common.errors import InvalidArgument

T = TypeVar("T")


def check_max_points(max_points: int) -> None:
    if max_points < 0:
        raise InvalidArgument(f"max_points must be >= 0, got {max_points}", reason="INVALID_LIMIT")


def downsample(points: Sequence[T], max_points: int) -> list[T]:
    """At most `max_points` evenly spaced points (0: all), the first and the last always kept."""
    check_max_points(max_points)
    if max_points == 0 or len(points) <= max_points:
        return list(points)
    if max_points == 1:
        return [points[-1]]
    last = len(points) - 1
    indices = sorted({round(i * last / (max_points - 1)) for i in range(max_points)})
    return [points[i] for i in indices]
