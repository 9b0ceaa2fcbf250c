"""Time-series CV: hand-checked folds, leak-freedom properties for every method, config errors,
and a feature built from the future that scores near perfectly only without purging."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsRegressor

from mlmesh_common.errors import InvalidArgument, TooLittleData
from mlmesh_training.cv import MAX_FOLDS, METHODS, CVConfig, Fold, split


def pairs(folds: list[Fold]) -> list[tuple[list[int], list[int]]]:
    return [(f.train.tolist(), f.test.tolist()) for f in folds]


# --- hand-checked folds (h = target_horizon; row i's label spans rows [i, i + h]) ---


def test_expanding_by_hand():
    config = CVConfig("expanding", n_splits=2, test_size=4, min_train_size=5)
    # h = 2: the default gap of 1 row plus the row whose label ends on the first test row.
    assert pairs(split(20, config, 2)) == [
        (list(range(10)), [12, 13, 14, 15]),
        (list(range(14)), [16, 17, 18, 19]),
    ]
    gap_zero = CVConfig("expanding", n_splits=2, test_size=4, min_train_size=5, gap=0)
    assert [f.train.tolist() for f in split(20, gap_zero, 1)] == [list(range(11)), list(range(15))]
    unpurged = split(20, config, 2, purge=False)
    assert [f.train.tolist() for f in unpurged] == [list(range(12)), list(range(16))]


def test_rolling_by_hand():
    config = CVConfig("rolling", n_splits=2, test_size=3, min_train_size=10)
    assert pairs(split(20, config, 1)) == [
        (list(range(3, 13)), [14, 15, 16]),
        (list(range(6, 16)), [17, 18, 19]),
    ]


def test_purged_kfold_by_hand():
    # h = 2 purges 2 rows before and after each block; embargo ceil(0.05 * 20) = 1 row after.
    folds = split(20, CVConfig("purged_kfold", n_splits=4, embargo_pct=0.05), 2)
    assert pairs(folds) == [
        (list(range(8, 20)), [0, 1, 2, 3, 4]),
        ([0, 1, 2, *range(13, 20)], [5, 6, 7, 8, 9]),
        ([*range(8), 18, 19], [10, 11, 12, 13, 14]),
        (list(range(13)), [15, 16, 17, 18, 19]),
    ]
    assert all(f.test_groups == () for f in folds)
    # An explicit gap widens the purge before each block only.
    with_gap = split(20, CVConfig("purged_kfold", n_splits=4, gap=1), 2)
    assert with_gap[1].train.tolist() == [0, 1, *range(12, 20)]


def test_cpcv_by_hand():
    folds = split(30, CVConfig("cpcv", n_splits=5, n_test_splits=2), 1)
    assert [f.test_groups for f in folds] == list(itertools.combinations(range(5), 2))
    # Groups of 6 rows; h = 1 purges one row on each side of every tested group.
    assert pairs(folds)[1] == (
        [7, 8, 9, 10, *range(19, 30)],
        [*range(6), *range(12, 18)],
    )
    assert pairs(folds)[5] == (
        [*range(5), 13, 14, 15, 16, *range(25, 30)],
        [*range(6, 12), *range(18, 24)],
    )


def test_folds_are_read_only_int64_and_deterministic():
    config = CVConfig("cpcv", n_splits=6, n_test_splits=2, embargo_pct=0.01)
    first, again = split(500, config, 3), split(500, config, 3)
    assert pairs(first) == pairs(again)
    fold = first[0]
    assert fold.train.dtype == np.int64 and fold.test.dtype == np.int64
    with pytest.raises(ValueError):
        fold.train[0] = 1


# --- properties over random sizes ---


def assert_well_formed(fold: Fold, n_rows: int) -> None:
    train, test = fold.train, fold.test
    assert len(test) > 0 and len(train) > 0
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert train[0] >= 0 and test[0] >= 0 and train[-1] < n_rows and test[-1] < n_rows
    assert np.intersect1d(train, test).size == 0


def nearest_test_distance(fold: Fold) -> np.ndarray:
    """For every training row, how many rows away the nearest test row is."""
    pos = np.searchsorted(fold.test, fold.train)
    after = fold.test[np.minimum(pos, len(fold.test) - 1)]
    before = fold.test[np.maximum(pos - 1, 0)]
    return np.minimum(np.abs(after - fold.train), np.abs(fold.train - before))


def assert_no_leak(fold: Fold, horizon: int) -> None:
    # Labels [i, i + h] and [j, j + h] share a row iff |i - j| <= h. This implies the weaker
    # rule that no training label interval reaches a test row (i < j => i + h < j).
    assert nearest_test_distance(fold).min() > horizon


def blocks_of(fold: Fold) -> list[np.ndarray]:
    return np.split(fold.test, np.flatnonzero(np.diff(fold.test) > 1) + 1)


def split_or_reject(n_rows: int, config: CVConfig, horizon: int) -> list[Fold]:
    try:
        return split(n_rows, config, horizon)
    except TooLittleData:
        assume(False)
        raise


sizes = st.one_of(st.floats(0.03, 0.12), st.integers(2, 30))
train_sizes = st.one_of(st.floats(0.1, 0.3), st.integers(10, 60))
gaps = st.one_of(st.none(), st.integers(0, 5))


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["rolling", "expanding"]),
    n_rows=st.integers(60, 2000),
    horizon=st.integers(1, 10),
    n_splits=st.integers(2, 6),
    test_size=sizes,
    min_train_size=train_sizes,
    gap=gaps,
)
def test_walk_forward_properties(method, n_rows, horizon, n_splits, test_size, min_train_size, gap):
    config = CVConfig(method, n_splits, test_size, min_train_size, gap)
    folds = split_or_reject(n_rows, config, horizon)
    assert [f.index for f in folds] == list(range(n_splits))
    window = len(folds[0].train)
    for fold in folds:
        assert_well_formed(fold, n_rows)
        assert fold.test_groups == ()
        assert fold.train[-1] < fold.test[0]
        # Exactly gap + 1 rows left out; the default gap h - 1 leaves out the h leaky rows.
        left_out = fold.test[0] - fold.train[-1] - 1
        assert left_out == (horizon - 1 if gap is None else gap) + 1
        if gap is None:
            assert_no_leak(fold, horizon)
        if method == "expanding":
            assert fold.train[0] == 0
        else:
            assert len(fold.train) == window
    wanted = min_train_size if min_train_size >= 1 else math.floor(min_train_size * n_rows + 1e-9)
    assert window >= max(wanted, 10)
    test_rows = [f.test for f in folds]
    assert len({len(t) for t in test_rows}) == 1 and len(test_rows[0]) >= 2
    assert test_rows[-1][-1] == n_rows - 1
    for earlier, later in itertools.pairwise(test_rows):
        assert later[0] == earlier[-1] + 1  # back to back, in time order, never overlapping
        assert np.array_equal(later, np.arange(later[0], later[-1] + 1))


def expected_purged_train(
    n_rows: int, fold: Fold, horizon: int, gap: int | None, embargo: int
) -> np.ndarray:
    rows = np.arange(n_rows)
    keep = np.ones(n_rows, dtype=bool)
    for block in blocks_of(fold):
        keep &= (rows < block[0] - horizon - (gap or 0)) | (rows > block[-1] + horizon + embargo)
    return rows[keep]


def assert_purged(folds: list[Fold], n_rows: int, horizon: int, config: CVConfig) -> None:
    embargo = config.embargo_rows(n_rows)
    for fold in folds:
        assert_well_formed(fold, n_rows)
        assert_no_leak(fold, horizon)
        for block in blocks_of(fold):
            after = np.arange(block[-1] + 1, block[-1] + 1 + horizon + embargo)
            assert np.intersect1d(fold.train, after).size == 0
        expected = expected_purged_train(n_rows, fold, horizon, config.gap, embargo)
        assert np.array_equal(fold.train, expected)


@settings(max_examples=80, deadline=None)
@given(
    n_rows=st.integers(60, 2000),
    horizon=st.integers(1, 10),
    n_splits=st.integers(2, 8),
    embargo_pct=st.floats(0, 0.05),
    gap=gaps,
)
def test_purged_kfold_properties(n_rows, horizon, n_splits, embargo_pct, gap):
    config = CVConfig("purged_kfold", n_splits, gap=gap, embargo_pct=embargo_pct)
    folds = split_or_reject(n_rows, config, horizon)
    assert len(folds) == n_splits
    assert_purged(folds, n_rows, horizon, config)
    # Contiguous test blocks of near-equal size that partition the series in order.
    assert all(len(blocks_of(f)) == 1 for f in folds)
    assert np.array_equal(np.concatenate([f.test for f in folds]), np.arange(n_rows))
    assert max(len(f.test) for f in folds) - min(len(f.test) for f in folds) <= 1


@st.composite
def cpcv_shapes(draw: st.DrawFn) -> tuple[int, int]:
    n_splits = draw(st.integers(3, 7))
    return n_splits, draw(st.integers(1, n_splits - 1))


@settings(max_examples=60, deadline=None)
@given(
    n_rows=st.integers(60, 2000),
    horizon=st.integers(1, 10),
    shape=cpcv_shapes(),
    embargo_pct=st.floats(0, 0.03),
    gap=gaps,
)
def test_cpcv_properties(n_rows, horizon, shape, embargo_pct, gap):
    n_splits, n_test = shape
    config = CVConfig("cpcv", n_splits, gap=gap, embargo_pct=embargo_pct, n_test_splits=n_test)
    folds = split_or_reject(n_rows, config, horizon)
    assert len(folds) == math.comb(n_splits, n_test)
    assert [f.test_groups for f in folds] == list(itertools.combinations(range(n_splits), n_test))
    assert_purged(folds, n_rows, horizon, config)
    # The single-group folds are the groups themselves; every fold tests the union of its own.
    groups = [f.test for f in split(n_rows, CVConfig("purged_kfold", n_splits), horizon)]
    times_tested = np.zeros(n_splits, dtype=int)
    for fold in folds:
        assert np.array_equal(fold.test, np.concatenate([groups[g] for g in fold.test_groups]))
        times_tested[list(fold.test_groups)] += 1
    assert times_tested.tolist() == [math.comb(n_splits - 1, n_test - 1)] * n_splits


# --- config errors ---


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (CVConfig(method="random"), "method"),
        (CVConfig(n_splits=1), "n_splits"),
        (CVConfig(n_splits=2.5), "n_splits"),  # type: ignore[arg-type]
        (CVConfig(method="cpcv", n_splits=4, n_test_splits=0), "n_test_splits"),
        (CVConfig(method="cpcv", n_splits=4, n_test_splits=4), "n_test_splits"),
        (CVConfig(test_size=0), "test_size"),
        (CVConfig(test_size=-0.1), "test_size"),
        (CVConfig(test_size=1.5), "test_size"),
        (CVConfig(test_size=float("nan")), "test_size"),
        (CVConfig(min_train_size=0.0), "min_train_size"),
        (CVConfig(min_train_size=20.5), "min_train_size"),
        (CVConfig(gap=-1), "gap"),
        (CVConfig(embargo_pct=-0.01), "embargo_pct"),
        (CVConfig(embargo_pct=0.5), "embargo_pct"),
        (CVConfig(method="cpcv", n_splits=16, n_test_splits=8), "n_splits"),
    ],
)
def test_invalid_configs(config, field):
    with pytest.raises(InvalidArgument) as excinfo:
        config.validate(500, 1)
    assert excinfo.value.reason == "INVALID_CV_CONFIG"
    assert excinfo.value.metadata == {"field": field}
    assert field in excinfo.value.message


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(InvalidArgument) as excinfo:
        split(500, CVConfig(method="kfold"))
    assert all(method in excinfo.value.message for method in METHODS)


def test_fold_cap():
    assert math.comb(14, 7) > MAX_FOLDS >= math.comb(10, 5)
    assert len(split(5000, CVConfig("cpcv", n_splits=10, n_test_splits=5), 1)) == 252


def test_invalid_horizon():
    with pytest.raises(InvalidArgument) as excinfo:
        CVConfig().validate(500, 0)
    assert excinfo.value.reason == "INVALID_HORIZON"


@pytest.mark.parametrize(
    ("config", "horizon", "enough", "too_few"),
    [
        # 3 windows of 5 rows + 3 left-out rows + a first training window of 12 rows.
        (CVConfig("expanding", n_splits=3, test_size=5, min_train_size=12), 3, 30, 29),
        (CVConfig("rolling", n_splits=3, test_size=5, min_train_size=12), 3, 30, 29),
        # The training floor of 10 rows applies whatever min_train_size says.
        (CVConfig("expanding", n_splits=2, test_size=4, min_train_size=5), 1, 19, 18),
        # A rolling window of 0.2 * n rows needs n >= 50 to reach 10 rows.
        (CVConfig("rolling", n_splits=2, test_size=5, min_train_size=0.2), 1, 50, 49),
        # Test windows need 2 rows: 0.01 * n >= 2.
        (CVConfig("expanding", n_splits=2, test_size=0.01), 1, 200, 199),
        # 2 blocks: the h = 10 purged rows leave the other block 10 training rows, then 9.
        (CVConfig("purged_kfold", n_splits=2), 10, 40, 39),
        # 9 rows cannot make 5 test blocks of 2 rows.
        (CVConfig("purged_kfold", n_splits=5), 1, 60, 9),
        # Groups of 10 rows: testing groups 0 and 2 with their purges leaves 8 training rows.
        (CVConfig("cpcv", n_splits=3, n_test_splits=2), 1, 90, 30),
    ],
)
def test_too_little_data(config, horizon, enough, too_few):
    config.validate(enough, horizon)
    with pytest.raises(TooLittleData) as excinfo:
        split(too_few, config, horizon)
    assert excinfo.value.reason == "TOO_LITTLE_DATA" and excinfo.value.http_status == 422
    assert excinfo.value.metadata == {"rows": str(too_few)}


# --- the leak purging exists for ---


def test_a_feature_built_from_the_future_scores_only_without_purge():
    """Labels are h-bar forward returns, so a row's label shares h - 1 of its h returns with
    its neighbours' labels. The feature is the absolute move still to come until the end of the
    sample: built from the future, it says nothing about the sign of the next h bars, but it
    falls strictly with time, so a 1-nearest-neighbour model finds the training row next to a
    test row in time and returns its label, which is mostly the test row's own future. With
    2-row test blocks every test row has such a neighbour unless the h rows on each side of
    the block are purged; after purging the nearest training label shares no return with the
    test label and the direction is a coin toss.

    Returns are small noise plus a +-2% jump on 6% of the bars, so the sign of an h-bar return
    rarely flips between neighbours (leaky score ~0.98) while labels h bars apart are
    independent (purged score ~0.5); both stay well inside the bounds across seeds."""
    h, n = 80, 2000
    rng = np.random.default_rng(7)
    jumps = (rng.random(n + h) < 0.06) * rng.choice([-0.02, 0.02], n + h)
    returns = rng.normal(0, 0.001, n + h) + jumps  # returns[t]: log close[t + 1] - close[t]
    log_close = np.concatenate([[0.0], np.cumsum(returns)])
    target = log_close[h : n + h] - log_close[:n]
    feature = np.cumsum(np.abs(returns)[::-1])[::-1][:n].reshape(-1, 1)
    config = CVConfig("purged_kfold", n_splits=n // 2)

    def directional_accuracy(purge: bool) -> float:
        hits = []
        # Every 4th fold keeps the test fast; those 250 folds span the whole series.
        for fold in split(n, config, h, purge=purge)[::4]:
            model = KNeighborsRegressor(n_neighbors=1).fit(feature[fold.train], target[fold.train])
            hits.append(np.sign(model.predict(feature[fold.test])) == np.sign(target[fold.test]))
        return float(np.mean(hits))

    leaky, purged = directional_accuracy(purge=False), directional_accuracy(purge=True)
    assert leaky >= 0.95, leaky
    assert purged <= 0.7, purged
