"""Side-by-side comparison rules shared by the tracking and experiments services.

A metric is maximized when the caller says so, or when a token of its name says so (`val_acc`,
`roc_auc`, `sharpe`); otherwise it is minimized. Null and NaN never win.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mlmesh_common.errors import InvalidArgument

Direction = Literal["maximize", "minimize"]

MAXIMIZED_TOKENS = frozenset(
    {
        "acc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "r2",
        "sharpe",
        "sortino",
        "calmar",
        "return",
        "returns",
        "hit",
        "ic",
    }
)
_TOKEN_SPLIT = re.compile(r"[_.\-/]")


def metric_direction(name: str, maximize: Iterable[str] = ()) -> Direction:
    if name in set(maximize):
        return "maximize"
    tokens = {token for token in _TOKEN_SPLIT.split(name.lower()) if token}
    return "maximize" if tokens & MAXIMIZED_TOKENS else "minimize"


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class MetricDiff:
    values: dict[str, float | None]
    best_id: str | None
    best_value: float | None
    direction: Direction


@dataclass(frozen=True)
class ParamDiff:
    values: dict[str, str | None]
    varies: bool


def metric_diff(
    ids: Sequence[str],
    metrics: Mapping[str, Mapping[str, object]],
    maximize: Iterable[str] = (),
    only: Iterable[str] = (),
) -> dict[str, MetricDiff]:
    """For each metric key (all keys, or just `only`), the per-id values and the best id.

    Ties go to the id that comes first in `ids`.
    """
    maximize = set(maximize)
    keys = list(only) or sorted({key for i in ids for key in metrics.get(i, {})})
    result: dict[str, MetricDiff] = {}
    for key in keys:
        direction = metric_direction(key, maximize)
        values: dict[str, float | None] = {}
        best_id: str | None = None
        best_value: float | None = None
        for i in ids:
            raw = metrics.get(i, {}).get(key)
            value = float(raw) if _is_number(raw) else None
            values[i] = value
            if value is None:
                continue
            better = (
                best_value is None
                or (direction == "maximize" and value > best_value)
                or (direction == "minimize" and value < best_value)
            )
            if better:
                best_id, best_value = i, value
        result[key] = MetricDiff(values, best_id, best_value, direction)
    return result


def param_diff(ids: Sequence[str], params: Mapping[str, Mapping[str, str]]) -> dict[str, ParamDiff]:
    """For each param key, the per-id values; a key missing from some ids counts as varying."""
    keys = sorted({key for i in ids for key in params.get(i, {})})
    result: dict[str, ParamDiff] = {}
    for key in keys:
        values = {i: params.get(i, {}).get(key) for i in ids}
        result[key] = ParamDiff(values, varies=len(set(values.values())) > 1)
    return result


def check_compare_ids(ids: Sequence[str], *, minimum: int = 2, maximum: int = 10) -> None:
    """2..10 distinct, non-empty ids, or InvalidArgument."""
    if not minimum <= len(ids) <= maximum:
        raise InvalidArgument(
            f"compare takes {minimum} to {maximum} ids, got {len(ids)}", reason="INVALID_ID_COUNT"
        )
    if any(not i for i in ids):
        raise InvalidArgument("ids must be non-empty", reason="INVALID_ID")
    duplicates = sorted({i for i in ids if list(ids).count(i) > 1})
    if duplicates:
        raise InvalidArgument(
            f"duplicate ids: {', '.join(duplicates)}",
            reason="DUPLICATE_IDS",
            metadata={"duplicates": ",".join(duplicates)},
        )
