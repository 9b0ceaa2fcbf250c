"""Time-series CV never leaks the future: property tests over random sizes for every method,
and a leaked feature that scores perfectly without purging and not with it."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsRegressor

from mlmesh_common.errors import InvalidArgument, TooLittleData
from mlmesh_training.cv import METHODS, CVConfig, split


def test_expanding_and_rolling_by_hand():
    expanding = split(20, CVConfig("expanding", n_splits=2, test_size=4, min_train_size=5), 1)
    # Row 11's label close[12] / close[11] uses the first test row's price: left out.
    assert [(f.train.tolist(), f.test.tolist()) for f in expanding] == [
        (list(range(11)), [12, 13, 14, 15]),
        (list(range(15)), [16, 17, 18, 19]),
    ]
    rolling = split(40, CVConfig("rolling", n_splits=2, test_size=4, min_train_size=10), 3)
    # h = 3: the gap (h - 1 = 2) and the row before it, whose labels reach row 32, are out.
    assert rolling[0].train.tolist() == list(range(19, 29))
    assert rolling[0].test.tolist() == [32, 33, 34, 35]


def test_purged_kfold_by_hand():
    folds = split(40, CVConfig("purged_kfold", n_splits=4, embargo_pct=0.05), 3)
    middle = folds[1]  # tests rows 10..19
    assert middle.test.tolist() == list(range(10, 20))
    # Purged: rows 7-9 (labels reach the block) and 20-22 (their prices are inside the
    # block's labels); embargo: rows 23-24.
    assert middle.train.tolist() == list(range(7)) + list(range(25, 40))


def test_cpcv_paths():
    folds = split(60, CVConfig("cpcv", n_splits=6, n_test_splits=2), 1)
    assert len(folds) == math.comb(6, 2)
    counts = np.zeros(6, int)
    for fold in folds:
        counts[list(fold.test_groups)] += 1
    assert counts.tolist() == [math.comb(5, 1)] * 6


@settings(max_examples=80, deadline=None)
@given(
    n_rows=st.integers(200, 2000),
    horizon=st.integers(1, 10),
    method=st.sampled_from(METHODS),
    n_splits=st.integers(2, 6),
    test_size=st.floats(0.02, 0.12),
    embargo=st.floats(0, 0.05),
)
def test_no_fold_ever_trains_on_the_future(n_rows, horizon, method, n_splits, test_size, embargo):
    config = CVConfig(method, n_splits, test_size, 0.2, None, embargo, min(2, n_splits - 1))
    try:
        folds = split(n_rows, config, horizon)
    except TooLittleData:
        return
    embargo_rows = math.ceil(embargo * n_rows)
    for fold in folds:
        train, test = fold.train, fold.test
        assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
        assert train.min() >= 0 and test.max() < n_rows
        assert not set(train) & set(test)
        # No training label resolves inside a test block: for every block start s, no train
        # row i < s has i + h > s.
        blocks = np.split(test, np.flatnonzero(np.diff(test) > 1) + 1)
        for block in blocks:
            start, end = block[0], block[-1]
            before = train[train < start]
            assert not np.any(before + horizon > start)
            if method in ("purged_kfold", "cpcv"):
                after = train[train > end]
                assert not np.any(after <= end + embargo_rows)
        if method in ("rolling", "expanding"):
            assert train.max() < test.min()
    if method in ("rolling", "expanding"):
        for earlier, later in itertools.pairwise(folds):
            assert earlier.test.max() < later.test.min()
    if method == "purged_kfold":
        assert np.array_equal(np.sort(np.concatenate([f.test for f in folds])), np.arange(n_rows))


@pytest.mark.parametrize(
    "config",
    [
        CVConfig(method="random"),
        CVConfig(n_splits=1),
        CVConfig(method="cpcv", n_splits=4, n_test_splits=4),
        CVConfig(test_size=0),
        CVConfig(test_size=1.5),
        CVConfig(gap=-1),
        CVConfig(embargo_pct=0.6),
    ],
)
def test_invalid_configs(config):
    with pytest.raises(InvalidArgument) as excinfo:
        config.validate(500, 1)
    assert excinfo.value.reason == "INVALID_CV_CONFIG"


def test_too_little_data_is_422():
    with pytest.raises(TooLittleData):
        CVConfig(n_splits=5, test_size=0.15, min_train_size=0.5).validate(40, 1)


def test_a_future_feature_scores_perfectly_only_without_purge():
    """Labels are h-day forward returns, so neighbouring rows share most of their future. A
    feature that pinpoints each row in time (here the row number itself) lets a 1-nearest-
    neighbour model look up the training label next to a test row, which is built from the
    test period's own future returns. Short test blocks put every test row near a training
    row: without purge and embargo the direction is right about nine times in ten; with them
    it is a coin toss."""
    rng = np.random.default_rng(0)
    h, n = 120, 3000
    returns = rng.normal(0, 0.01, n + h)
    target = np.array([returns[i + 1 : i + 1 + h].sum() for i in range(n)])
    feature = np.arange(n, dtype=float).reshape(-1, 1)
    config = CVConfig("purged_kfold", n_splits=300, embargo_pct=h / n)

    def accuracy(purge: bool) -> float:
        hits = []
        for fold in split(n, config, h, purge=purge):
            model = KNeighborsRegressor(n_neighbors=1).fit(feature[fold.train], target[fold.train])
            pred = model.predict(feature[fold.test])
            hits.append(np.mean(np.sign(pred) == np.sign(target[fold.test])))
        return float(np.mean(hits))

    leaky, purged = accuracy(purge=False), accuracy(purge=True)
    assert leaky >= 0.88, leaky
    assert purged <= 0.6, purged
