"""Direction rules and side-by-side diffs shared by the tracking and experiments services."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlmesh_common.compare import (
    MAXIMIZED_TOKENS,
    check_compare_ids,
    metric_diff,
    metric_direction,
    param_diff,
)
from mlmesh_common.errors import InvalidArgument


@pytest.mark.parametrize(
    "name",
    ["val_acc", "directional_accuracy", "roc_auc", "sharpe", "test.f1", "ic", "Sortino", "r2"],
)
def test_maximized_by_name(name):
    assert metric_direction(name) == "maximize"


@pytest.mark.parametrize("name", ["mse", "val_loss", "mae", "drawdown", "accurate", "icy", "hits"])
def test_minimized_unless_a_whole_token_says_otherwise(name):
    assert metric_direction(name) == "minimize"


def test_request_can_maximize_any_metric():
    assert metric_direction("profit", maximize=["profit"]) == "maximize"


def test_best_is_direction_aware_and_nulls_never_win():
    ids = ["a", "b", "c"]
    metrics = {
        "a": {"mse": 0.3, "sharpe": 1.0, "loss": float("nan")},
        "b": {"mse": 0.1, "sharpe": 2.5},
        "c": {"sharpe": None, "loss": 0.7},
    }
    diff = metric_diff(ids, metrics)
    assert diff["mse"].best_id == "b" and diff["mse"].direction == "minimize"
    assert diff["mse"].values == {"a": 0.3, "b": 0.1, "c": None}
    assert diff["sharpe"].best_id == "b" and diff["sharpe"].best_value == 2.5
    assert diff["sharpe"].direction == "maximize"
    assert diff["loss"].best_id == "c" and diff["loss"].values["a"] is None


def test_no_numeric_value_means_no_best():
    diff = metric_diff(["a", "b"], {"a": {"x": float("nan")}, "b": {}})
    assert diff["x"].best_id is None and diff["x"].best_value is None


def test_ties_go_to_the_first_id():
    diff = metric_diff(["b", "a"], {"a": {"mse": 1.0}, "b": {"mse": 1.0}})
    assert diff["mse"].best_id == "b"


def test_only_restricts_the_keys():
    diff = metric_diff(["a", "b"], {"a": {"x": 1, "y": 2}, "b": {"x": 3}}, only=["y"])
    assert list(diff) == ["y"] and diff["y"].values == {"a": 2.0, "b": None}


def test_param_missing_counts_as_varying():
    diff = param_diff(
        ["a", "b", "c"],
        {"a": {"lr": "0.1", "d": "3"}, "b": {"lr": "0.1"}, "c": {"lr": "0.1", "d": "3"}},
    )
    assert diff["lr"].varies is False
    assert diff["d"].varies is True and diff["d"].values["b"] is None


@pytest.mark.parametrize("ids", [[], ["a"], [str(i) for i in range(11)], ["a", "a"], ["a", ""]])
def test_compare_ids_rejected(ids):
    with pytest.raises(InvalidArgument):
        check_compare_ids(ids)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
values = st.one_of(finite, st.none(), st.just(float("nan")))
names = st.sampled_from(["mse", "sharpe", "val_acc", "loss", "hit_rate", "mae"])


@given(st.lists(st.dictionaries(names, values), min_size=2, max_size=10))
def test_best_is_the_extreme_numeric_value(rows):
    ids = [f"r{i}" for i in range(len(rows))]
    metrics = dict(zip(ids, rows, strict=True))
    for key, diff in metric_diff(ids, metrics).items():
        numeric = [
            (i, v)
            for i, v in ((i, metrics[i].get(key)) for i in ids)
            if v is not None and not math.isnan(v)
        ]
        if not numeric:
            assert diff.best_id is None
            continue
        pick = max if diff.direction == "maximize" else min
        best = pick(v for _, v in numeric)
        assert diff.best_value == best
        assert diff.best_id == next(i for i, v in numeric if v == best)
        expected_direction = "maximize" if set(key.split("_")) & MAXIMIZED_TOKENS else "minimize"
        assert diff.direction == expected_direction


@given(
    st.lists(
        st.dictionaries(st.sampled_from("abc"), st.sampled_from(["1", "2"])),
        min_size=2,
        max_size=10,
    )
)
def test_varies_iff_values_differ_or_missing(rows):
    ids = [f"r{i}" for i in range(len(rows))]
    params = dict(zip(ids, rows, strict=True))
    for key, diff in param_diff(ids, params).items():
        seen = [params[i].get(key) for i in ids]
        assert diff.varies == (len(set(seen)) > 1)
        assert list(diff.values) == ids
