"""Machine-learning plugins: gradient-boosted trees (XGBoost, LightGBM, CatBoost) and a
scikit-learn random forest, all single-threaded so that a seed fixes the model."""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlmesh_training.plugins.base import (
    Family,
    FittedModel,
    ModelPlugin,
    Param,
    ParamSpec,
    PickledModel,
    feature_matrix,
    probe_data,
)


class EstimatorModel(PickledModel):
    """A fitted scikit-learn-compatible regressor and the feature order it was trained on."""

    def __init__(self, plugin_key: str, features: list[str], estimator: Any) -> None:
        self.plugin_key = plugin_key
        self.features = features
        self.estimator = estimator

    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        if len(X) == 0:
            return np.empty(0)
        return np.asarray(self.estimator.predict(feature_matrix(X, self.features)), np.float64)


class EstimatorPlugin(ModelPlugin):
    """A plugin whose parameters are the estimator's own constructor arguments."""

    family = Family.MACHINE_LEARNING
    seed_parameter = "random_state"
    rounds_parameter = "n_estimators"  # set to 1 for the library's check of a parameter set
    reserved = {"n_jobs": "one thread per fit, so that a seed fixes the model and Ray's CPUs fit"}

    @abc.abstractmethod
    def estimator_class(self) -> type:
        """The library's estimator, imported when first needed."""

    def settings(self, seed: int) -> dict[str, Any]:
        """Constructor arguments the plugin sets unless the user gives them."""
        return {self.seed_parameter: seed}

    def library_defaults(self) -> Mapping[str, Any]:
        return self.estimator_class()().get_params()

    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        """The unfitted estimator: the plugin's settings, overridden by the user's parameters
        (a setting gives way to any user parameter of its alias group)."""
        settings = self.settings(seed)
        for group in self.alias_groups():
            if group & set(params):
                settings = {name: v for name, v in settings.items() if name not in group}
        return self.estimator_class()(**{**settings, **params})

    def _probe(self, params: dict[str, Any]) -> None:
        x, y = probe_data()
        self.make_estimator({**params, self.rounds_parameter: 1}, 0).fit(x, y)

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        features = [str(column) for column in X.columns]
        estimator = self.make_estimator(params, seed)
        # Plain arrays: estimators fitted on frames warn when later given other column labels.
        estimator.fit(X.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.float64))
        return EstimatorModel(self.key, features, estimator)


_FRACTION = {"kind": "float", "positive": True, "high": 1.0}
_LEARNING_RATE = ParamSpec("float", 0.01, 0.3, log=True)
_SUBSAMPLE = ParamSpec("float", 0.5, 1.0)


class XGBoostPlugin(EstimatorPlugin):
    key = "ml.xgboost"
    model_type = "xgboost"
    description = "XGBoost gradient-boosted trees (hist), squared error."
    parameters = {
        "n_estimators": Param(200, "int", low=1),
        "max_depth": Param(4, "int", low=1),
        "learning_rate": Param(0.05, "float", positive=True),
        "subsample": Param(0.8, **_FRACTION),
        "colsample_bytree": Param(0.8, **_FRACTION),
        "min_child_weight": Param(1.0, "float", low=0.0),
        "gamma": Param(0.0, "float", low=0.0),
        "reg_alpha": Param(0.0, "float", low=0.0),
        "reg_lambda": Param(1.0, "float", low=0.0),
    }

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "n_estimators": ParamSpec("int", 50, 400, step=50),
            "max_depth": ParamSpec("int", 2, 8),
            "learning_rate": _LEARNING_RATE,
            "subsample": _SUBSAMPLE,
            "colsample_bytree": ParamSpec("float", 0.5, 1.0),
            "min_child_weight": ParamSpec("float", 0.5, 20.0, log=True),
            "reg_lambda": ParamSpec("float", 1e-3, 10.0, log=True),
        }

    library = "xgboost.XGBRegressor"
    reserved = {**EstimatorPlugin.reserved, "nthread": EstimatorPlugin.reserved["n_jobs"]}

    def estimator_class(self) -> type:
        from xgboost import XGBRegressor

        return XGBRegressor

    def settings(self, seed: int) -> dict[str, Any]:
        return {**super().settings(seed), "tree_method": "hist", "n_jobs": 1, "verbosity": 0}

    def library_defaults(self) -> Mapping[str, Any]:
        # The wrapper's arguments, plus the booster parameters it passes through as **kwargs.
        return {**dict.fromkeys(XGBOOST_BOOSTER_PARAMETERS), **super().library_defaults()}

    def alias_groups(self) -> list[frozenset[str]]:
        return XGBOOST_ALIASES


class LightGBMPlugin(EstimatorPlugin):
    key = "ml.lightgbm"
    model_type = "lightgbm"
    description = "LightGBM gradient-boosted trees, deterministic single-threaded mode."
    parameters = {
        "n_estimators": Param(200, "int", low=1),
        "num_leaves": Param(15, "int", low=2),
        "max_depth": Param(-1, "int", low=-1),  # -1: no limit
        "learning_rate": Param(0.05, "float", positive=True),
        "subsample": Param(0.8, **_FRACTION),
        "subsample_freq": Param(1, "int", low=0),  # LightGBM only bags rows when this is > 0
        "colsample_bytree": Param(0.8, **_FRACTION),
        "min_child_samples": Param(20, "int", low=1),
        "reg_alpha": Param(0.0, "float", low=0.0),
        "reg_lambda": Param(0.0, "float", low=0.0),
    }

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "n_estimators": ParamSpec("int", 50, 400, step=50),
            "num_leaves": ParamSpec("int", 4, 63, log=True),
            "learning_rate": _LEARNING_RATE,
            "subsample": _SUBSAMPLE,
            "colsample_bytree": ParamSpec("float", 0.5, 1.0),
            "min_child_samples": ParamSpec("int", 5, 100, log=True),
            "reg_lambda": ParamSpec("float", 1e-3, 10.0, log=True),
        }

    library = "lightgbm.LGBMRegressor"

    def estimator_class(self) -> type:
        from lightgbm import LGBMRegressor

        return LGBMRegressor

    def settings(self, seed: int) -> dict[str, Any]:
        return {
            **super().settings(seed),
            "n_jobs": 1,
            "deterministic": True,
            "force_row_wise": True,  # with `deterministic`, avoids the row/col-wise timing probe
            "verbose": -1,
        }

    def library_defaults(self) -> Mapping[str, Any]:
        # The wrapper's arguments, plus every LightGBM parameter and alias (from LightGBM's
        # own table), which the wrapper passes through as **kwargs.
        names = {name for group in self.alias_groups() for name in group}
        return {**dict.fromkeys(names), **super().library_defaults()}

    def alias_groups(self) -> list[frozenset[str]]:
        return _lightgbm_aliases()


class CatBoostPlugin(EstimatorPlugin):
    key = "ml.catboost"
    model_type = "catboost"
    description = "CatBoost oblivious-tree boosting, RMSE, Bernoulli row sampling."
    parameters = {
        "iterations": Param(200, "int", low=1),
        "depth": Param(4, "int", low=1, high=16),
        "learning_rate": Param(0.05, "float", positive=True),
        "l2_leaf_reg": Param(3.0, "float", low=0.0),
        "subsample": Param(0.8, **_FRACTION),
        "rsm": Param(1.0, **_FRACTION),
        "random_strength": Param(1.0, "float", low=0.0),
    }

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "iterations": ParamSpec("int", 50, 400, step=50),
            "depth": ParamSpec("int", 3, 8),
            "learning_rate": _LEARNING_RATE,
            "l2_leaf_reg": ParamSpec("float", 1.0, 30.0, log=True),
            "subsample": _SUBSAMPLE,
            "rsm": ParamSpec("float", 0.5, 1.0),
        }

    library = "catboost.CatBoostRegressor"
    seed_parameter = "random_seed"
    rounds_parameter = "iterations"
    reserved = {
        "thread_count": EstimatorPlugin.reserved["n_jobs"],
        "allow_writing_files": "a fit writes no files beside the service",
        "train_dir": "a fit writes no files beside the service",
    }

    def estimator_class(self) -> type:
        from catboost import CatBoostRegressor

        return CatBoostRegressor

    def settings(self, seed: int) -> dict[str, Any]:
        return {
            **super().settings(seed),
            "loss_function": "RMSE",
            "bootstrap_type": "Bernoulli",  # the bootstrap that honours `subsample` on CPU
            "thread_count": 1,
            "verbose": False,
            "allow_writing_files": False,
        }

    def library_defaults(self) -> Mapping[str, Any]:
        # CatBoost's constructor names every parameter (its defaults are None: CatBoost's own).
        signature = inspect.signature(self.estimator_class().__init__)
        return {name: None for name in signature.parameters if name != "self"}

    def alias_groups(self) -> list[frozenset[str]]:
        return CATBOOST_ALIASES


class RandomForestPlugin(EstimatorPlugin):
    key = "ml.random_forest"
    model_type = "random_forest"
    description = "scikit-learn random forest of regression trees."
    parameters = {
        "n_estimators": Param(100, "int", low=1),
        "max_depth": Param(6, "int", low=1, nullable=True),  # null: grow until leaves are pure
        "min_samples_leaf": Param(5, "int", low=1),
        "max_features": Param(0.5, **_FRACTION),
        "bootstrap": Param(True, "bool"),
    }

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "n_estimators": ParamSpec("int", 50, 300, step=50),
            "max_depth": ParamSpec("int", 3, 12),
            "min_samples_leaf": ParamSpec("int", 1, 50, log=True),
            "max_features": ParamSpec("float", 0.2, 1.0),
        }

    library = "sklearn.ensemble.RandomForestRegressor"

    def estimator_class(self) -> type:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor

    def settings(self, seed: int) -> dict[str, Any]:
        return {**super().settings(seed), "n_jobs": 1}


# Booster parameters of "XGBoost Parameters" (the documentation) that XGBRegressor's own
# arguments do not name; the wrapper passes them to the booster.
XGBOOST_BOOSTER_PARAMETERS = (
    "eta",
    "min_split_loss",
    "lambda",
    "alpha",
    "seed",
    "max_cached_hist_node",
    "refresh_leaf",
    "process_type",
    "updater",
    "sample_type",
    "normalize_type",
    "rate_drop",
    "one_drop",
    "skip_drop",
    "feature_selector",
    "top_k",
    "seed_per_iteration",
    "disable_default_eval_metric",
    "huber_slope",
    "quantile_alpha",
    "tweedie_variance_power",
)
# XGBoost's documented aliases, each with the wrapper's name.
XGBOOST_ALIASES = [
    frozenset(group)
    for group in (
        ("learning_rate", "eta"),
        ("gamma", "min_split_loss"),
        ("reg_lambda", "lambda"),
        ("reg_alpha", "alpha"),
        ("random_state", "seed"),
        ("n_jobs", "nthread"),
    )
]
# CatBoost's documented synonyms, which it refuses to be given together.
CATBOOST_ALIASES = [
    frozenset(group)
    for group in (
        ("iterations", "n_estimators", "num_boost_round", "num_trees"),
        ("learning_rate", "eta"),
        ("random_seed", "random_state"),
        ("l2_leaf_reg", "reg_lambda"),
        ("depth", "max_depth"),
        ("rsm", "colsample_bylevel"),
        ("border_count", "max_bin"),
        ("thread_count", "n_jobs"),
        ("min_data_in_leaf", "min_child_samples"),
        ("max_leaves", "num_leaves"),
        ("loss_function", "objective"),
        ("verbose", "logging_level", "silent", "verbose_eval"),
    )
]


@functools.cache
def _lightgbm_aliases() -> list[frozenset[str]]:
    """LightGBM's own table of its parameters and their aliases."""
    from lightgbm.basic import _ConfigAliases

    table = _ConfigAliases._get_all_param_aliases()
    return [frozenset({name, *aliases}) for name, aliases in table.items()]
