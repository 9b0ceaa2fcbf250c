"""Ensemble plugins over other (non-ensemble) plugins: an equal-weight mean, and stacking with a
ridge regression trained on time-ordered out-of-fold member predictions."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlmesh_common.errors import InvalidArgument, TooLittleData
from mlmesh_training.plugins.base import (
    Family,
    FittedModel,
    ModelPlugin,
    Param,
    ParamSpec,
    derive_seed,
    invalid_artifact,
    invalid_parameter,
    pack_artifact,
    unpickle,
)

DEFAULT_MEMBERS: dict[str, dict[str, Any]] = {"ml.lightgbm": {}, "ml.random_forest": {}}


def _registry() -> Any:
    # Imported late: the registry imports this module to list it.
    from mlmesh_training.plugins import registry

    return registry


def check_members(plugin_key: str, members: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Members keyed by plugin key, in key order, each with its plugin's checked parameters."""
    if not members:
        raise invalid_parameter(plugin_key, "members", "needs at least one member plugin")
    checked: dict[str, dict[str, Any]] = {}
    for name, params in members.items():
        member = _registry().get_plugin(name)
        if member.family is Family.ENSEMBLE:
            raise InvalidArgument(
                f"{plugin_key} cannot contain the ensemble {member.key}",
                reason="NESTED_ENSEMBLE",
                metadata={"plugin": plugin_key, "member": member.key},
            )
        if member.key in checked:
            raise invalid_parameter(plugin_key, "members", f"names {member.key} twice")
        if params is not None and not isinstance(params, Mapping):
            raise invalid_parameter(plugin_key, "members", f"{name}: parameters must be an object")
        checked[member.key] = member.check_params(params)
    return dict(sorted(checked.items()))


def fit_members(
    X: pd.DataFrame, y: pd.Series, members: dict[str, dict[str, Any]], seed: int
) -> list[FittedModel]:
    # Each member gets its own seed so that two members of one family do not share randomness.
    return [
        _registry().get_plugin(key).fit(X, y, params, derive_seed(seed, offset))
        for offset, (key, params) in enumerate(members.items())
    ]


def predict_members(
    members: list[FittedModel], X: pd.DataFrame, history: pd.DataFrame | None
) -> np.ndarray:
    """(rows, members) predictions; a row any member cannot predict is NaN in that column."""
    return np.column_stack([member.predict(X, history) for member in members]).reshape(
        len(X), len(members)
    )


class EnsembleModel(FittedModel):
    """Fitted members plus a combiner; saved as the members' own artifacts and the combiner."""

    def __init__(self, plugin_key: str, members: list[FittedModel], combiner: Any) -> None:
        self.plugin_key = plugin_key
        self.members = members
        self.combiner = combiner  # None: equal-weight mean
        self.features = list(members[0].features)  # members train on the same columns

    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        stacked = predict_members(self.members, X, history)
        if self.combiner is None:
            return stacked.mean(axis=1)  # NaN where any member is NaN: masked by the caller
        return self.combiner.predict(stacked)

    def save(self) -> bytes:
        payload = pickle.dumps(
            {"members": [member.save() for member in self.members], "combiner": self.combiner},
            protocol=5,
        )
        return pack_artifact(self.plugin_key, self.format_version, payload)


class EnsemblePlugin(ModelPlugin):
    family = Family.ENSEMBLE

    def _check_combination(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "members": check_members(self.key, params["members"])}

    def _load(self, payload: bytes) -> FittedModel:
        state = unpickle(self.key, payload)
        if not isinstance(state, dict) or not {"members", "combiner"} <= set(state):
            raise invalid_artifact(f"artifact payload is not a {self.key} model")
        members = [_registry().load_model(data) for data in state["members"]]
        return EnsembleModel(self.key, members, state["combiner"])


class MeanEnsemblePlugin(EnsemblePlugin):
    key = "ens.mean"
    model_type = "mean"
    description = "Equal-weight mean of member plugins' predictions."
    parameters = {"members": Param(DEFAULT_MEMBERS, "dict")}

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        return EnsembleModel(self.key, fit_members(X, y, params["members"], seed), None)


class RidgeCombiner:
    """Ridge regression on standardized member predictions, so alpha means the same whatever
    the scale of the returns."""

    def __init__(self, options: dict[str, Any], predictions: np.ndarray, y: np.ndarray) -> None:
        self.mean = predictions.mean(axis=0)
        scale = predictions.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)
        self.ridge = ridge(options).fit((predictions - self.mean) / self.scale, y)

    def predict(self, predictions: np.ndarray) -> np.ndarray:
        out = np.full(len(predictions), np.nan)
        rows = np.isfinite(predictions).all(axis=1)
        if rows.any():
            scaled = (predictions[rows] - self.mean) / self.scale
            out[rows] = self.ridge.predict(scaled)
        return out


def ridge(options: dict[str, Any]) -> Any:
    """The final estimator: `alpha` and any other keyword argument of scikit-learn's Ridge."""
    from sklearn.linear_model import Ridge

    return Ridge(**options)


def time_ordered_folds(n_rows: int, n_splits: int) -> list[tuple[int, int]]:
    """(train_end, test_end) for expanding-window folds: each fold trains on every row before
    its test block, so no member sees a row later than the ones it predicts."""
    bounds = np.linspace(0, n_rows, n_splits + 2).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(1, n_splits + 1)]


class StackingEnsemblePlugin(EnsemblePlugin):
    key = "ens.stacking"
    model_type = "stacking"
    description = (
        "Ridge regression over member predictions, trained out-of-fold on expanding, "
        "time-ordered folds; members are then refitted on all rows."
    )
    parameters = {
        "members": Param(DEFAULT_MEMBERS, "dict"),
        "alpha": Param(1.0, "float", low=0.0),  # ridge penalty of the final estimator
        "n_splits": Param(3, "int", low=1, high=20),
    }
    library = "sklearn.linear_model.Ridge"

    def library_defaults(self) -> Mapping[str, Any]:
        return ridge({}).get_params()

    def _ridge_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k not in ("members", "n_splits")}

    def _probe(self, params: dict[str, Any]) -> None:
        ridge(self._ridge_options(params))._validate_params()

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "alpha": ParamSpec("float", 1e-2, 1e3, log=True),
            "n_splits": ParamSpec("int", 2, 5),
        }

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        folds = time_ordered_folds(len(X), params["n_splits"])
        if folds[0][0] < 2 or any(end <= start for start, end in folds):
            raise TooLittleData(f"{self.key} needs more rows for n_splits={params['n_splits']}")
        predictions = np.full((len(X), len(params["members"])), np.nan)
        for train_end, test_end in folds:
            past = slice(0, train_end)
            members = fit_members(X.iloc[past], y.iloc[past], params["members"], seed)
            block = X.iloc[train_end:test_end]
            predictions[train_end:test_end] = predict_members(members, block, X.iloc[past])
        rows = np.isfinite(predictions).all(axis=1)
        if rows.sum() < 2:
            raise TooLittleData(f"{self.key}: members predicted too few out-of-fold rows")
        combiner = RidgeCombiner(
            self._ridge_options(params), predictions[rows], y.to_numpy(np.float64)[rows]
        )
        members = fit_members(X, y, params["members"], seed)
        return EnsembleModel(self.key, members, combiner)
