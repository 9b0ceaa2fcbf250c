"""Backtest paths of combinatorial purged cross-validation (Lopez de Prado, AFML ch. 12): with N
groups and k test groups the C(N, k) splits, ordered lexicographically by their test groups,
cover every group C(N - 1, k - 1) times; the j-th split (0-based) that tests group g supplies
group g to path j (AFML numbers both splits and paths from 1)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlmesh_common.quant.backtest import backtest_stats
from mlmesh_common.quant.errors import StatisticsError


def check_groups(n_groups: int, n_test_groups: int) -> None:
    if n_groups < 2 or not 1 <= n_test_groups < n_groups:
        raise StatisticsError(
            f"CPCV needs N >= 2 groups and 1 <= k < N test groups, got N={n_groups}, "
            f"k={n_test_groups}",
            reason="INVALID_CPCV_GROUPS",
        )


def cpcv_splits(n_groups: int, n_test_groups: int) -> list[tuple[int, ...]]:
    """The test groups of each split, in lexicographic order (itertools.combinations)."""
    check_groups(n_groups, n_test_groups)
    return list(itertools.combinations(range(n_groups), n_test_groups))


def n_paths(n_groups: int, n_test_groups: int) -> int:
    check_groups(n_groups, n_test_groups)
    return math.comb(n_groups - 1, n_test_groups - 1)


def cpcv_paths(n_groups: int, n_test_groups: int) -> np.ndarray:
    """(paths, N) split indices: entry [j, g] is the split whose predictions of group g belong
    to path j."""
    splits = cpcv_splits(n_groups, n_test_groups)
    tests = np.zeros((len(splits), n_groups), dtype=bool)
    for s, groups in enumerate(splits):
        tests[s, list(groups)] = True
    # How many earlier splits test the same group: that is the path the split's group joins.
    order = np.cumsum(tests, axis=0) - 1
    paths = np.empty((n_paths(n_groups, n_test_groups), n_groups), dtype=np.int64)
    split_of, group_of = np.nonzero(tests)
    paths[order[split_of, group_of], group_of] = split_of
    return paths


def assemble_paths(
    n_groups: int, n_test_groups: int, pieces: Mapping[tuple[int, int], Sequence[float]]
) -> list[np.ndarray]:
    """Each path's series: group by group in time order, the piece (split, group) -> values
    that the path takes from its split (positions, or P&L, of that group's rows)."""
    paths = cpcv_paths(n_groups, n_test_groups)
    missing = [
        (int(s), g) for path in paths for g, s in enumerate(path) if (int(s), g) not in pieces
    ]
    if missing:
        raise StatisticsError(
            f"no values for (split, group) {missing[0]} of {len(missing)} missing",
            reason="MISSING_PATH_PIECE",
        )
    return [
        np.concatenate([np.asarray(pieces[int(s), g], dtype=float) for g, s in enumerate(path)])
        for path in paths
    ]


@dataclass(frozen=True)
class PathDistribution:
    """The distribution of a statistic over the backtest paths; std has ddof=1 (NaN for one
    path), quantiles interpolate linearly (numpy's default)."""

    mean: float
    std: float
    min: float
    q05: float
    q50: float
    q95: float


def path_distribution(values: Sequence[float]) -> PathDistribution:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise StatisticsError("no paths", reason="TOO_FEW_PATHS")
    q05, q50, q95 = np.quantile(array, [0.05, 0.5, 0.95])
    std = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return PathDistribution(
        float(array.mean()), std, float(array.min()), float(q05), float(q50), float(q95)
    )


def path_sharpes(
    n_groups: int,
    n_test_groups: int,
    positions: Mapping[tuple[int, int], Sequence[float]],
    next_returns: Mapping[int, Sequence[float]],
    cost_bps: float,
    periods_per_year: float,
) -> list[float]:
    """Each path's annualized Sharpe ratio: the path's positions, piece (split, group) by
    group, backtested as one series over the groups' next-bar returns (flat at its start)."""
    held = assemble_paths(n_groups, n_test_groups, positions)
    returns = np.concatenate([np.asarray(next_returns[g], dtype=float) for g in range(n_groups)])
    return [backtest_stats(path, returns, cost_bps, periods_per_year).sharpe for path in held]
