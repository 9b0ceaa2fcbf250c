"""Machine-learning plugins: gradient-boosted trees (XGBoost, LightGBM, CatBoost) and a
scikit-learn random forest, all single-threaded so that a seed fixes the model."""

from __future__ import annotations

import abc
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

    @abc.abstractmethod
    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        """The unfitted estimator: the user's parameters plus the plugin's fixed settings."""

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

    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        from xgboost import XGBRegressor

        return XGBRegressor(**params, tree_method="hist", random_state=seed, n_jobs=1, verbosity=0)


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

    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            **params,
            random_state=seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,  # with `deterministic`, avoids the row/col-wise timing probe
            verbose=-1,
        )


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

    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        from catboost import CatBoostRegressor

        return CatBoostRegressor(
            **params,
            loss_function="RMSE",
            bootstrap_type="Bernoulli",  # the bootstrap that honours `subsample` on CPU
            random_seed=seed,
            thread_count=1,
            verbose=False,
            allow_writing_files=False,
        )


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

    def make_estimator(self, params: dict[str, Any], seed: int) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(**params, random_state=seed, n_jobs=1)
