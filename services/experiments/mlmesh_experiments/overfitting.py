"""Rules of the overfitting report over registry runs, without I/O: the request's checks and the
alignment of the runs' metric histories into one (steps, runs) matrix of per-period returns."""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import itemgetter

import numpy as np

from mlmesh_common import quant
from mlmesh_common.errors import InvalidArgument
from mlmesh_experiments.entities import HistoryPoint

DEFAULT_METRIC = "oos_return"
DEFAULT_BLOCKS = 16
DEFAULT_PERIODS_PER_YEAR = 252.0
MIN_RUNS, MAX_RUNS = 2, 1000


def check_blocks(n_blocks: int) -> None:
    if n_blocks < 2 or n_blocks % 2 or n_blocks > quant.MAX_BLOCKS:
        raise InvalidArgument(
            f"n_blocks must be even, from 2 to {quant.MAX_BLOCKS}, got {n_blocks}",
            reason="INVALID_N_BLOCKS",
            metadata={"n_blocks": str(n_blocks)},
        )


def check_periods_per_year(periods_per_year: float) -> None:
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise InvalidArgument(
            f"periods_per_year must be a positive number, got {periods_per_year}",
            reason="INVALID_PERIODS_PER_YEAR",
        )


def check_run_count(count: int, source: str) -> None:
    if not MIN_RUNS <= count <= MAX_RUNS:
        raise InvalidArgument(
            f"the overfitting report takes {MIN_RUNS} to {MAX_RUNS} runs; {source} gives {count}",
            reason="INVALID_RUN_COUNT",
            metadata={"runs": str(count)},
        )


def check_run_ids(ids: Sequence[str]) -> None:
    check_run_count(len(ids), "run_ids")
    if any(not i for i in ids):
        raise InvalidArgument("run ids must be non-empty", reason="INVALID_ID")
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise InvalidArgument(
            f"duplicate run ids: {', '.join(duplicates)}",
            reason="DUPLICATE_IDS",
            metadata={"duplicates": ",".join(duplicates)},
        )


def _series(points: Sequence[HistoryPoint]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one history: non-finite points left out, and of several points at one
    step the last in the store's order (step, then timestamp)."""
    steps = np.fromiter(map(itemgetter(0), points), dtype=np.int64, count=len(points))
    values = np.fromiter(map(itemgetter(2), points), dtype=float, count=len(points))
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    last = np.append(steps[1:] != steps[:-1], True) if steps.size else np.ones(0, dtype=bool)
    return steps[last], values[last]


def aligned_returns(
    ids: Sequence[str], histories: Mapping[str, Sequence[HistoryPoint]], metric_key: str
) -> np.ndarray:
    """(common steps, runs): each run's values at the steps every run has, by step."""
    series = {i: _series(histories.get(i, ())) for i in ids}
    missing = [i for i in ids if series[i][0].size == 0]
    if missing:
        raise InvalidArgument(
            f"runs without a finite {metric_key!r} history: {', '.join(missing)}",
            reason="METRIC_MISSING",
            metadata={"run_ids": ",".join(missing), "key": metric_key},
        )
    common = functools.reduce(
        lambda left, right: np.intersect1d(left, right, assume_unique=True),
        (steps for steps, _ in series.values()),
    )
    columns = [values[np.searchsorted(steps, common)] for steps, values in series.values()]
    return np.column_stack(columns) if common.size else np.empty((0, len(ids)))


def check_observations(n_observations: int, n_blocks: int, n_runs: int, metric_key: str) -> None:
    if n_observations < 2 * n_blocks:
        raise InvalidArgument(
            f"the {n_runs} runs share {n_observations} steps of {metric_key!r}; n_blocks="
            f"{n_blocks} needs at least {2 * n_blocks} common observations",
            reason="TOO_FEW_OBSERVATIONS",
            metadata={"n_observations": str(n_observations), "needed": str(2 * n_blocks)},
        )


def evaluate(
    ids: Sequence[str],
    histories: Mapping[str, Sequence[HistoryPoint]],
    metric_key: str,
    n_blocks: int,
) -> quant.SelectionBias:
    """The selection-bias statistics of the runs' aligned series (CPU work: run it off the event
    loop). A statistic the series cannot support is InvalidArgument naming the run."""
    matrix = aligned_returns(ids, histories, metric_key)
    check_observations(len(matrix), n_blocks, len(ids), metric_key)
    try:
        return quant.selection_bias(matrix, n_blocks)
    except quant.StatisticsError as error:
        message = error.message
        if error.column is not None:
            message = message.replace(f"series {error.column}", f"run {ids[error.column]}")
        raise InvalidArgument(message, reason=error.reason) from error
