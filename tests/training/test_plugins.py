"""Model plugins on the S&P 500 demo data: training, prediction, save/load, seeds, parameter checks
and the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlmesh_common.errors import InvalidArgument
from mlmesh_training.plugins import (
    Family,
    FittedModel,
    ParamSpec,
    get_plugin,
    load_model,
    plugins,
    plugins_of_family,
)
from mlmesh_training.plugins.base import pack_artifact
from tests.helpers.training import train_test_split

KEYS = [
    "dl.lstm",
    "ens.mean",
    "ens.stacking",
    "ml.catboost",
    "ml.lightgbm",
    "ml.random_forest",
    "ml.xgboost",
    "stat.arima",
    "stat.garch",
]

# A non-default value for every parameter, cheap to train: the seed and parameter-reach tests.
CUSTOM: dict[str, dict[str, Any]] = {
    "stat.arima": {"p": 0, "d": 1, "q": 1, "trend": "t"},
    "stat.garch": {"mean": "ARX", "lags": 2, "p": 2, "o": 1, "q": 2, "dist": "t"},
    "ml.xgboost": {
        "n_estimators": 30,
        "max_depth": 3,
        "learning_rate": 0.1,
        "subsample": 0.7,
        "colsample_bytree": 0.6,
        "min_child_weight": 2.0,
        "gamma": 1e-4,
        "reg_alpha": 0.01,
        "reg_lambda": 2.0,
    },
    "ml.lightgbm": {
        "n_estimators": 30,
        "num_leaves": 7,
        "max_depth": 5,
        "learning_rate": 0.1,
        "subsample": 0.7,
        "subsample_freq": 2,
        "colsample_bytree": 0.6,
        "min_child_samples": 10,
        "reg_alpha": 0.01,
        "reg_lambda": 0.5,
    },
    "ml.catboost": {
        "iterations": 30,
        "depth": 3,
        "learning_rate": 0.1,
        "l2_leaf_reg": 5.0,
        "subsample": 0.7,
        "rsm": 0.6,
        "random_strength": 0.5,
    },
    "ml.random_forest": {
        "n_estimators": 20,
        "max_depth": None,
        "min_samples_leaf": 10,
        "max_features": 0.7,
        "bootstrap": False,
    },
    "dl.lstm": {
        "lookback": 8,
        "hidden_size": 12,
        "num_layers": 2,
        "dropout": 0.1,
        "epochs": 3,
        "batch_size": 128,
        "learning_rate": 0.005,
    },
    # A model-type alias and a statistical member.
    "ens.mean": {"members": {"xgboost": {"n_estimators": 20}, "stat.garch": {"dist": "t"}}},
    # A sequence member: out-of-fold predictions must pass it the rows before each block.
    "ens.stacking": {
        "members": {"ml.lightgbm": {"n_estimators": 20}, "dl.lstm": {"epochs": 2}},
        "alpha": 10.0,
        "n_splits": 2,
    },
}


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    return train_test_split()


def _assert_predictions(fitted: FittedModel, X_train: pd.DataFrame, X_test: pd.DataFrame) -> None:
    """Finite float64 predictions for every test row, identical after a save/load round trip."""
    predictions = fitted.predict(X_test, history=X_train)
    assert predictions.dtype == np.float64
    assert predictions.shape == (len(X_test),)
    assert np.isfinite(predictions).all()
    data = fitted.save()
    for loaded in (get_plugin(fitted.plugin_key).load(data), load_model(data)):
        np.testing.assert_array_equal(loaded.predict(X_test, history=X_train), predictions)


# --- every plugin --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_defaults_train_predict_and_round_trip(key: str, split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    fitted = get_plugin(key).fit(X_train, y_train, {}, seed=0)
    _assert_predictions(fitted, X_train, X_test)


@pytest.mark.parametrize("key", KEYS)
def test_search_space_sample_trains(key: str, split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    plugin = get_plugin(key)
    rng = np.random.default_rng(2024)
    params = {name: spec.sample(rng) for name, spec in plugin.search_space().items()}
    _assert_predictions(plugin.fit(X_train, y_train, params, seed=1), X_train, X_test)


@pytest.mark.parametrize("key", KEYS)
def test_same_seed_gives_identical_predictions(key: str, split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    plugin = get_plugin(key)
    first, second = (plugin.fit(X_train, y_train, CUSTOM[key], seed=7) for _ in range(2))
    np.testing.assert_array_equal(
        first.predict(X_test, history=X_train), second.predict(X_test, history=X_train)
    )


@pytest.mark.parametrize("key", KEYS)
def test_custom_params_cover_every_parameter(key: str) -> None:
    defaults = get_plugin(key).default_params()
    assert set(CUSTOM[key]) == set(defaults)
    assert all(CUSTOM[key][name] != default for name, default in defaults.items())


@pytest.mark.parametrize("key", KEYS)
def test_unknown_parameter_is_rejected(key: str, split: tuple) -> None:
    X_train, y_train, _, _ = split
    plugin = get_plugin(key)
    with pytest.raises(InvalidArgument) as raised:
        plugin.fit(X_train, y_train, {"no_such_param": 1}, seed=0)
    assert raised.value.reason == "UNKNOWN_PARAMETER"
    assert raised.value.metadata["unknown"] == "no_such_param"
    # The answer says what the name was checked against.
    checked_against = plugin.library or key
    assert raised.value.metadata["checked_against"] == checked_against
    assert f"(not accepted by {checked_against})" in raised.value.message


@pytest.mark.parametrize("key", KEYS)
def test_search_space_keys_are_valid_parameters(key: str) -> None:
    plugin = get_plugin(key)
    space = plugin.search_space()
    assert set(space) <= set(plugin.default_params())
    rng = np.random.default_rng(0)
    for _ in range(25):
        # Every point of the space passes the plugin's own checks.
        plugin.check_params({name: spec.sample(rng) for name, spec in space.items()})
    for spec in space.values():
        assert ParamSpec.from_dict(spec.to_dict()) == spec


# --- parameters reach the estimator --------------------------------------------------------------


def _estimator_params(fitted: FittedModel, params: dict[str, Any]) -> None:
    actual = fitted.estimator.get_params()
    assert {name: actual[name] for name in params} == params


def _arima_params(fitted: FittedModel, params: dict[str, Any]) -> None:
    model = fitted.result.model
    assert model.order == (params["p"], params["d"], params["q"])
    assert model.trend == params["trend"]


def _garch_params(fitted: FittedModel, params: dict[str, Any]) -> None:
    model = fitted.result.model
    lags = sum(name.startswith("y[") for name in fitted.result.params.index)
    distributions = {"normal": "Normal", "t": "StudentsT", "skewt": "SkewStudent"}
    assert (type(model).__name__, lags) == (params["mean"], params["lags"])
    assert (model.volatility.p, model.volatility.o, model.volatility.q) == (
        params["p"],
        params["o"],
        params["q"],
    )
    assert type(model.distribution).__name__ == distributions[params["dist"]]


def _lstm_params(fitted: FittedModel, params: dict[str, Any], optimizer: dict) -> None:
    lstm = fitted.network.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers) == (
        6,
        params["hidden_size"],
        params["num_layers"],
    )
    assert lstm.dropout == fitted.network.dropout.p == params["dropout"]
    assert fitted.lookback == params["lookback"]
    windows = 1200 - params["lookback"] + 1
    steps_per_epoch = -(-windows // params["batch_size"])
    assert optimizer["lr"] == params["learning_rate"]
    assert optimizer["steps"] == params["epochs"] * steps_per_epoch


def _member_params(fitted: FittedModel, params: dict[str, Any]) -> None:
    members = get_plugin(fitted.plugin_key).check_params(params)["members"]
    assert [member.plugin_key for member in fitted.members] == list(members)
    for member in fitted.members:
        expected = {k: v for k, v in members[member.plugin_key].items() if k != "dist"}
        if hasattr(member, "estimator"):
            _estimator_params(member, expected)
        elif member.plugin_key == "stat.garch":
            assert type(member.result.model.distribution).__name__ == "StudentsT"


@pytest.fixture
def optimizer_spy(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Records the learning rate and step count of dl.lstm's Adam optimizer."""
    import torch

    from mlmesh_training.plugins import _lstm_net

    seen: dict[str, Any] = {"steps": 0}

    class SpyAdam(torch.optim.Adam):
        def __init__(self, parameters: Any, lr: float) -> None:
            seen["lr"] = lr
            super().__init__(parameters, lr=lr)

        def step(self, closure: Callable | None = None) -> Any:
            seen["steps"] += 1
            return super().step(closure)

    monkeypatch.setattr(_lstm_net.torch.optim, "Adam", SpyAdam)
    return seen


@pytest.mark.parametrize("key", KEYS)
def test_every_parameter_reaches_the_estimator(
    key: str, split: tuple, optimizer_spy: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    X_train, y_train, _, _ = split
    plugin = get_plugin(key)
    params = CUSTOM[key]
    fits: list[str] = []
    if key == "ens.stacking":
        lightgbm = get_plugin("ml.lightgbm")
        original = type(lightgbm)._fit
        spy = lambda self, *args: fits.append(self.key) or original(self, *args)  # noqa: E731
        monkeypatch.setattr(type(lightgbm), "_fit", spy)
    fitted = plugin.fit(X_train, y_train, params, seed=3)
    if plugin.family is Family.MACHINE_LEARNING:
        _estimator_params(fitted, params)
    elif key == "stat.arima":
        _arima_params(fitted, params)
    elif key == "stat.garch":
        _garch_params(fitted, params)
    elif key == "dl.lstm":
        _lstm_params(fitted, params, optimizer_spy)
    else:
        _member_params(fitted, params)
    if key == "ens.stacking":
        assert fitted.combiner.ridge.alpha == params["alpha"]
        assert len(fits) == params["n_splits"] + 1  # one fit per fold, then the final refit


# --- library parameters beyond the defaults -------------------------------------------------------


def _booster_config(fitted: FittedModel) -> dict:
    import json

    return json.loads(fitted.estimator.get_booster().save_config())["learner"]


def _rf_reads(fitted: FittedModel) -> dict:
    tree = fitted.estimator.estimators_[0]
    return {
        "random_state": fitted.estimator.random_state,
        "min_samples_split": tree.min_samples_split,
        "criterion": tree.criterion,
    }


def _xgboost_reads(fitted: FittedModel) -> dict:
    booster = _booster_config(fitted)["gradient_booster"]
    return {
        "tree_method": booster["gbtree_train_param"]["tree_method"],
        "max_bin": int(booster["tree_train_param"]["max_bin"]),
    }


# A parameter outside each plugin's defaults, the value given, and how to read it back from the
# fitted object (the estimator, the library's result, or the optimizer the network trained with).
LIBRARY_PARAMS: dict[str, tuple[dict[str, Any], Callable[[FittedModel], dict]]] = {
    "ml.random_forest": (
        {"random_state": 11, "min_samples_split": 4, "criterion": "absolute_error"},
        _rf_reads,
    ),
    "ml.xgboost": ({"tree_method": "approx", "max_bin": 64}, _xgboost_reads),
    "ml.lightgbm": (
        {"feature_fraction": 0.7, "min_split_gain": 0.01},
        lambda f: {
            "feature_fraction": f.estimator.booster_.params["colsample_bytree"],
            "min_split_gain": f.estimator.booster_.params["min_split_gain"],
        },
    ),
    "ml.catboost": (
        {"border_count": 32, "leaf_estimation_iterations": 3},
        lambda f: {
            name: f.estimator.get_all_params()[name]
            for name in ("border_count", "leaf_estimation_iterations")
        },
    ),
    "stat.arima": ({"order": [2, 0, 1]}, lambda f: {"order": list(f.result.model.order)}),
    "stat.garch": ({"power": 1.0}, lambda f: {"power": f.result.model.volatility.power}),
    "dl.lstm": (
        {"weight_decay": 0.01},
        lambda f: {"weight_decay": f.state["optimizer"]["weight_decay"]},
    ),
    "ens.mean": (
        {"members": {"ml.random_forest": {"criterion": "absolute_error", "n_estimators": 5}}},
        lambda f: {
            "members": {
                "ml.random_forest": {
                    "criterion": f.members[0].estimator.criterion,
                    "n_estimators": f.members[0].estimator.n_estimators,
                }
            }
        },
    ),
    "ens.stacking": (
        {"fit_intercept": False},
        lambda f: {"fit_intercept": f.combiner.ridge.fit_intercept},
    ),
}


@pytest.mark.parametrize("key", KEYS)
def test_a_library_parameter_outside_the_defaults_reaches_the_fitted_model(
    key: str, split: tuple
) -> None:
    X_train, y_train, _, _ = split
    plugin = get_plugin(key)
    given, read_back = LIBRARY_PARAMS[key]
    assert not set(given) <= set(plugin.default_params()) or key == "ens.mean"
    # JSON numbers arrive as doubles: integral ones still reach integer arguments as integers.
    as_json = {k: float(v) if type(v) is int else v for k, v in given.items()}
    small = {"dl.lstm": {"epochs": 1}, "ens.stacking": {"n_splits": 2}}.get(key, {})
    fitted = plugin.fit(X_train.iloc[-400:], y_train.iloc[-400:], {**as_json, **small}, seed=0)
    assert read_back(fitted) == given
    assert get_plugin(key).check_params(plugin.check_params(as_json)) == plugin.check_params(
        as_json
    )


@pytest.mark.parametrize(
    ("key", "params", "message"),
    [
        ("ml.random_forest", {"criterion": "bogus"}, "criterion"),
        ("ml.xgboost", {"tree_method": "bogus"}, "bogus"),
        ("ml.lightgbm", {"boosting_type": "bogus"}, "bogus"),
        ("ml.catboost", {"border_count": -3}, "border_count"),
        ("stat.arima", {"seasonal_order": [1, 0, 0]}, "seasonal"),
        ("stat.garch", {"vol": "bogus"}, "vol"),
        ("dl.lstm", {"weight_decay": -1.0}, "weight_decay"),
        ("ens.stacking", {"solver": "bogus"}, "solver"),
    ],
)
def test_the_librarys_error_for_a_bad_value_is_a_400_with_its_message(
    key: str, params: dict, message: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        get_plugin(key).check_params(params)
    assert raised.value.reason == "INVALID_PARAMETER_VALUE"
    assert message in raised.value.message and get_plugin(key).library in raised.value.message


@pytest.mark.parametrize(
    ("key", "params", "reason"),
    [
        ("ml.random_forest", {"n_jobs": 4}, "RESERVED_PARAMETER"),
        ("ml.xgboost", {"nthread": 4}, "RESERVED_PARAMETER"),
        ("ml.lightgbm", {"num_threads": 4}, "RESERVED_PARAMETER"),
        ("ml.catboost", {"thread_count": 4}, "RESERVED_PARAMETER"),
        ("stat.garch", {"rescale": True}, "RESERVED_PARAMETER"),
        ("ml.lightgbm", {"eta": 0.1, "learning_rate": 0.2}, "DUPLICATE_PARAMETER"),
        ("ml.catboost", {"random_state": 1, "random_seed": 2}, "DUPLICATE_PARAMETER"),
        ("stat.arima", {"order": [1, 0, 0], "p": 2}, "INVALID_PARAMETER"),
        ("stat.arima", {"order": [1, 0]}, "INVALID_PARAMETER"),
        ("stat.arima", {"enforce_stationarity": "no"}, "INVALID_PARAMETER"),
        ("ml.random_forest", {"random_state": None}, "INVALID_SEED"),
        ("ml.xgboost", {"seed": -1}, "INVALID_SEED"),
    ],
)
def test_reserved_duplicate_and_mistyped_library_parameters_are_a_400(
    key: str, params: dict, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        get_plugin(key).check_params(params)
    assert raised.value.reason == reason


def test_an_alias_is_renamed_to_the_plugins_own_name() -> None:
    lightgbm = get_plugin("ml.lightgbm")
    checked = lightgbm.check_params({"eta": 0.2, "num_iterations": 10})
    assert (checked["learning_rate"], checked["n_estimators"]) == (0.2, 10)
    assert "eta" not in checked and "num_iterations" not in checked


@pytest.mark.parametrize(
    ("key", "params", "used"),
    [
        ("ml.random_forest", {"random_state": 5}, 5),
        ("ml.xgboost", {"seed": 6}, 6),
        ("ml.lightgbm", {"random_seed": 7}, 7),
        ("ml.catboost", {"random_state": 8}, 8),
        ("ml.xgboost", {}, 42),
        ("stat.arima", {}, 42),
    ],
)
def test_a_users_library_seed_wins_over_the_requests(key: str, params: dict, used: int) -> None:
    plugin = get_plugin(key)
    checked = plugin.check_params(params)
    assert plugin.seed_used(checked, 42) == used
    if plugin.family is Family.MACHINE_LEARNING:
        estimator = plugin.make_estimator(checked, 42)
        assert estimator.get_params()[plugin.seed_parameter] == used


def test_listing_and_checking_defaults_import_no_ml_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from mlmesh_training.plugins import get_plugin, plugins\n"
        "[p.check_params({}) for p in plugins()]\n"
        "get_plugin('ml.xgboost').check_params({'max_depth': 3})\n"
        "print(sorted(m for m in ('torch', 'xgboost', 'lightgbm', 'catboost', 'sklearn')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- plugin specifics ----------------------------------------------------------------------------


def test_lstm_masks_rows_without_history(split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    fitted = get_plugin("dl.lstm").fit(X_train, y_train, {"epochs": 1, "lookback": 10}, seed=0)
    alone = fitted.predict(X_test)
    assert np.isnan(alone[:9]).all() and np.isfinite(alone[9:]).all()
    # float32 kernels may round differently for another number of windows: close, not equal.
    np.testing.assert_allclose(alone[9:], fitted.predict(X_test, history=X_train)[9:], rtol=1e-5)
    with pytest.raises(InvalidArgument) as raised:
        fitted.predict(X_train, history=X_test)
    assert raised.value.reason == "INVALID_HISTORY"


def test_statistical_models_predict_training_rows_not_earlier_ones(split: tuple) -> None:
    X_train, y_train, _, _ = split
    fitted = get_plugin("stat.arima").fit(X_train.iloc[100:], y_train.iloc[100:], {}, seed=0)
    assert np.isfinite(fitted.predict(X_train.iloc[100:200])).all()
    with pytest.raises(InvalidArgument) as raised:
        fitted.predict(X_train.iloc[:200])
    assert raised.value.reason == "ROWS_NOT_PREDICTABLE"


def test_ensemble_is_nan_where_a_member_cannot_predict(split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    params = {"members": {"lstm": {"epochs": 1, "lookback": 5}, "xgboost": {"n_estimators": 5}}}
    predictions = get_plugin("ens.mean").fit(X_train, y_train, params, seed=0).predict(X_test)
    assert np.isnan(predictions[:4]).all() and np.isfinite(predictions[4:]).all()


# --- parameter checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "params", "reason"),
    [
        ("ml.xgboost", {"n_estimators": "many"}, "INVALID_PARAMETER"),
        ("ml.xgboost", {"n_estimators": 1.5}, "INVALID_PARAMETER"),
        ("ml.xgboost", {"learning_rate": 0}, "INVALID_PARAMETER"),
        ("ml.xgboost", {"subsample": 1.5}, "INVALID_PARAMETER"),
        ("ml.random_forest", {"bootstrap": 1}, "INVALID_PARAMETER"),
        ("ml.lightgbm", {"max_depth": None}, "INVALID_PARAMETER"),
        ("stat.arima", {"trend": "x"}, "INVALID_PARAMETER"),
        ("stat.arima", {"d": 1, "trend": "c"}, "INVALID_PARAMETER"),
        ("stat.garch", {"mean": "ARX"}, "INVALID_PARAMETER"),
        ("stat.garch", {"lags": 1}, "INVALID_PARAMETER"),
        ("ens.mean", {"members": []}, "INVALID_PARAMETER"),
        ("ens.mean", {"members": {}}, "INVALID_PARAMETER"),
        ("ens.mean", {"members": {"xgboost": {}, "ml.xgboost": {}}}, "INVALID_PARAMETER"),
        ("ens.mean", {"members": {"xgboost": 3}}, "INVALID_PARAMETER"),
        ("ens.mean", {"members": {"ens.stacking": {}}}, "NESTED_ENSEMBLE"),
        ("ens.stacking", {"members": {"mean": {}}}, "NESTED_ENSEMBLE"),
        ("ens.mean", {"members": {"prophet": {}}}, "UNKNOWN_PLUGIN"),
        ("ens.stacking", {"members": {"xgboost": {"depth": 3}}}, "UNKNOWN_PARAMETER"),
    ],
)
def test_invalid_parameters_are_a_400(key: str, params: dict, reason: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        get_plugin(key).check_params(params)
    assert raised.value.reason == reason


def test_check_params_merges_defaults_and_accepts_integral_floats() -> None:
    # Protobuf Struct carries every number as a double.
    checked = get_plugin("xgboost").check_params({"n_estimators": 50.0, "learning_rate": 1})
    assert checked == {
        **get_plugin("xgboost").default_params(),
        "n_estimators": 50,
        "learning_rate": 1.0,
    }
    assert type(checked["n_estimators"]) is int and type(checked["learning_rate"]) is float


def test_ensemble_members_are_normalised() -> None:
    checked = get_plugin("ens.mean").check_params({"members": {"xgboost": {"max_depth": 2}}})
    expected = {**get_plugin("ml.xgboost").default_params(), "max_depth": 2}
    assert checked == {"members": {"ml.xgboost": expected}}
    assert get_plugin("ens.mean").check_params(checked) == checked


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, True])
def test_invalid_seed_is_a_400(seed: Any, split: tuple) -> None:
    X_train, y_train, _, _ = split
    with pytest.raises(InvalidArgument) as raised:
        get_plugin("ml.xgboost").fit(X_train, y_train, {}, seed=seed)
    assert raised.value.reason == "INVALID_SEED"


def test_invalid_training_data_is_a_400(split: tuple) -> None:
    X_train, y_train, _, _ = split
    y_nan = y_train.copy()
    y_nan.iloc[3] = np.nan
    for X, y in [
        (X_train, y_nan),
        (X_train.iloc[::-1], y_train.iloc[::-1]),
        (X_train, y_train.iloc[1:]),
    ]:
        with pytest.raises(InvalidArgument) as raised:
            get_plugin("ml.xgboost").fit(X, y, {}, seed=0)
        assert raised.value.reason == "INVALID_TRAINING_DATA"


def test_missing_feature_column_is_a_400(split: tuple) -> None:
    X_train, y_train, X_test, _ = split
    fitted = get_plugin("ml.xgboost").fit(X_train, y_train, {"n_estimators": 5}, seed=0)
    with pytest.raises(InvalidArgument) as raised:
        fitted.predict(X_test.drop(columns="rsi_14"))
    assert raised.value.metadata == {"missing": "rsi_14"}


def test_load_rejects_foreign_and_corrupt_artifacts(split: tuple) -> None:
    X_train, y_train, _, _ = split
    data = get_plugin("ml.lightgbm").fit(X_train, y_train, {"n_estimators": 5}, seed=0).save()
    blobs = [
        ("ml.xgboost", data),
        ("ml.lightgbm", b"not a model"),
        ("dl.lstm", b""),
        ("dl.lstm", pack_artifact("dl.lstm", 1, b"garbage")),
        ("ens.mean", pack_artifact("ens.mean", 1, b"garbage")),
        ("ml.lightgbm", pack_artifact("ml.lightgbm", 99, b"")),
    ]
    for plugin, blob in blobs:
        with pytest.raises(InvalidArgument) as raised:
            get_plugin(plugin).load(blob)
        assert raised.value.reason == "INVALID_MODEL_ARTIFACT"


# --- registry ------------------------------------------------------------------------------------


def test_registry_lists_plugins_sorted_by_key() -> None:
    assert [plugin.key for plugin in plugins()] == KEYS


@pytest.mark.parametrize("key", KEYS)
def test_lookup_by_key_and_model_type(key: str) -> None:
    plugin = get_plugin(key)
    assert plugin.key == key
    assert get_plugin(plugin.model_type) is plugin
    assert get_plugin(key.upper()) is plugin
    assert isinstance(plugin.description, str) and plugin.description


def test_xgboost_names_ml_xgboost() -> None:
    assert get_plugin("xgboost").key == "ml.xgboost"


def test_unknown_plugin_lists_valid_ones() -> None:
    with pytest.raises(InvalidArgument) as raised:
        get_plugin("prophet")
    assert raised.value.reason == "UNKNOWN_PLUGIN"
    assert raised.value.metadata["valid"] == ",".join(KEYS)


def test_plugins_of_family() -> None:
    families = {family: [p.key for p in plugins_of_family(family)] for family in Family}
    assert families == {
        Family.STATISTICAL: ["stat.arima", "stat.garch"],
        Family.MACHINE_LEARNING: [
            "ml.catboost",
            "ml.lightgbm",
            "ml.random_forest",
            "ml.xgboost",
        ],
        Family.DEEP_LEARNING: ["dl.lstm"],
        Family.ENSEMBLE: ["ens.mean", "ens.stacking"],
    }
    assert plugins_of_family("ensemble") == plugins_of_family(Family.ENSEMBLE)
    with pytest.raises(InvalidArgument) as raised:
        plugins_of_family("bayesian")
    assert raised.value.reason == "UNKNOWN_FAMILY"


# --- ParamSpec -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "int", "low": 1, "high": 10},
        {"type": "int", "low": 1, "high": 1},
        {"type": "int", "low": 2, "high": 64, "log": True},
        {"type": "int", "low": 0, "high": 100, "step": 10},
        {"type": "int", "low": 1.0, "high": 8.0},
        {"type": "float", "low": -1.5, "high": 2.5},
        {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        {"type": "categorical", "choices": ["a", 1, 2.5, True, None]},
        {"type": "categorical", "choices": [64]},
    ],
)
def test_valid_param_specs(spec: dict) -> None:
    parsed = ParamSpec.from_dict(spec)
    parsed.validate()
    assert ParamSpec.from_dict(parsed.to_dict()) == parsed
    rng = np.random.default_rng(5)
    for _ in range(50):
        value = parsed.sample(rng)
        if parsed.type == "categorical":
            assert value in parsed.choices
            continue
        assert parsed.low <= value <= parsed.high
        assert type(value) is (int if parsed.type == "int" else float)
        if parsed.step is not None:
            assert ((value - parsed.low) / parsed.step).is_integer()


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "bool", "low": 0, "high": 1},
        {"type": "int", "low": 5, "high": 1},
        {"type": "float", "low": 2.0, "high": 1.0},
        {"type": "int", "low": 0, "high": 10, "log": True},
        {"type": "float", "low": -1.0, "high": 1.0, "log": True},
        {"type": "int", "low": 0.5, "high": 10},
        {"type": "int", "low": 0, "high": 10.5},
        {"type": "int", "low": 0, "high": 10, "step": 1.5},
        {"type": "float", "low": 0.0, "high": 1.0, "step": 0.0},
        {"type": "float", "low": 0.1, "high": 1.0, "step": 0.1, "log": True},
        {"type": "float", "low": None, "high": 1.0},
        {"type": "float", "low": 0.0, "high": float("inf")},
        {"type": "float", "low": True, "high": 2.0},
        {"type": "float", "low": 0.0, "high": 1.0, "choices": [0.5]},
        {"type": "categorical", "choices": []},
        {"type": "categorical"},
        {"type": "categorical", "choices": "abc"},
        {"type": "categorical", "choices": [[1, 2]]},
        {"type": "categorical", "choices": [{"a": 1}]},
        {"type": "categorical", "choices": [float("nan")]},
        {"type": "categorical", "choices": ["a", "a"]},
        {"type": "categorical", "choices": ["a"], "low": 0},
        {"type": "float", "low": 0.0, "high": 1.0, "scale": "log"},
        {"low": 0.0, "high": 1.0},
    ],
)
def test_invalid_param_specs(spec: dict) -> None:
    with pytest.raises(InvalidArgument) as raised:
        ParamSpec.from_dict(spec).validate()
    assert raised.value.reason == "INVALID_PARAM_SPEC"
