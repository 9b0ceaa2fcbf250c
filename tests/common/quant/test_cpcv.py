"""CPCV path assembly against a brute-force reference and AFML's N=6, k=2 example."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlmesh_common import quant


def brute_force_paths(n: int, k: int) -> list[list[int]]:
    """The rule read literally: list the splits in lexicographic order; for each group, the
    splits testing it in that order; path j takes the j-th of them."""
    splits = sorted(itertools.combinations(range(n), k))
    testing = {g: [s for s, groups in enumerate(splits) if g in groups] for g in range(n)}
    phi = math.comb(n - 1, k - 1)
    return [[testing[g][j] for g in range(n)] for j in range(phi)]


@pytest.mark.parametrize(("n", "k"), [(2, 1), (5, 1), (6, 2), (7, 3), (8, 2), (10, 4), (6, 5)])
def test_paths_match_the_brute_force_rule(n, k):
    paths = quant.cpcv_paths(n, k)
    assert paths.tolist() == brute_force_paths(n, k)
    assert paths.shape == (quant.n_paths(n, k), n)
    # Every (split, tested group) is used by exactly one path.
    splits = quant.cpcv_splits(n, k)
    used = sorted((int(s), g) for path in paths for g, s in enumerate(path))
    assert used == sorted((s, g) for s, groups in enumerate(splits) for g in groups)


def test_afml_example_n6_k2():
    # AFML fig. 12.2 numbers splits S1..S15 and paths 1..5 from 1: path 2 is (G1,S2), (G2,S6),
    # (G3,S6), (G4,S7), (G5,S8), (G6,S9) -- the 0-based path 1 of the j-th split rule.
    paths = quant.cpcv_paths(6, 2)
    assert len(paths) == 5
    assert [(g + 1, int(s) + 1) for g, s in enumerate(paths[1])] == [
        (1, 2),
        (2, 6),
        (3, 6),
        (4, 7),
        (5, 8),
        (6, 9),
    ]
    assert quant.cpcv_splits(6, 2)[:6] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 2)]


def test_assembled_paths_concatenate_each_groups_piece():
    n, k = 4, 2
    pieces = {
        (s, g): np.array([100.0 * s + g, 100.0 * s + g + 0.5])
        for s, groups in enumerate(quant.cpcv_splits(n, k))
        for g in groups
    }
    series = quant.assemble_paths(n, k, pieces)
    for path, values in zip(brute_force_paths(n, k), series, strict=True):
        expected = np.concatenate([pieces[s, g] for g, s in enumerate(path)])
        assert np.array_equal(values, expected)
    del pieces[(0, 0)]
    with pytest.raises(quant.StatisticsError, match="missing"):
        quant.assemble_paths(n, k, pieces)


def test_path_distribution():
    values = [0.5, 1.0, -0.2, 2.0, 0.7]
    dist = quant.path_distribution(values)
    assert dist.mean == pytest.approx(np.mean(values))
    assert dist.std == pytest.approx(np.std(values, ddof=1))
    assert dist.min == -0.2
    assert (dist.q05, dist.q50, dist.q95) == pytest.approx(
        tuple(np.percentile(values, [5, 50, 95]))
    )
    assert math.isnan(quant.path_distribution([1.0]).std)


@pytest.mark.parametrize(("n", "k"), [(1, 1), (5, 0), (5, 5)])
def test_invalid_groups(n, k):
    with pytest.raises(quant.StatisticsError) as error:
        quant.cpcv_paths(n, k)
    assert error.value.reason == "INVALID_CPCV_GROUPS"


def test_path_sharpes_backtest_each_path_as_one_series():
    n, k = 5, 2
    rng = np.random.default_rng(9)
    returns = {g: rng.normal(0.0003, 0.01, 30) for g in range(n)}
    positions = {
        (s, g): np.sign(rng.normal(size=30))
        for s, groups in enumerate(quant.cpcv_splits(n, k))
        for g in groups
    }
    sharpes = quant.path_sharpes(n, k, positions, returns, 2.0, 252)
    assert len(sharpes) == math.comb(n - 1, k - 1)
    for path, value in zip(brute_force_paths(n, k), sharpes, strict=True):
        held = np.concatenate([positions[s, g] for g, s in enumerate(path)])
        r = np.concatenate([returns[g] for g in range(n)])
        previous = np.concatenate([[0.0], held[:-1]])
        pnl = held * r - 2.0 / 10_000 * np.abs(held - previous)
        assert value == pytest.approx(pnl.mean() / pnl.std(ddof=1) * math.sqrt(252), rel=1e-9)
