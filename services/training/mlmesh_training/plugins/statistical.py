"""Statistical plugins: ARIMA with exogenous features (statsmodels SARIMAX) and a regression mean
with GARCH volatility (arch). Both are deterministic maximum-likelihood fits: the seed is unused."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mlmesh_common.errors import InvalidArgument
from mlmesh_training.plugins.base import (
    Family,
    FittedModel,
    ModelPlugin,
    Param,
    ParamSpec,
    PickledModel,
    feature_matrix,
    invalid_parameter,
    probe_data,
)


def locate_rows(train_index: pd.Index, index: pd.Index) -> tuple[np.ndarray, int]:
    """Training positions of X's in-sample rows, and how many of X's rows follow the training
    sample. A time-series model's state runs through time, so other rows cannot be predicted."""
    if not index.is_unique or not index.is_monotonic_increasing:
        raise InvalidArgument("X's index must be unique and increasing", reason="UNORDERED_INDEX")
    n_after = int((index > train_index[-1]).sum())
    positions = train_index.get_indexer(index[: len(index) - n_after])
    if (positions < 0).any():
        raise InvalidArgument(
            "a statistical model predicts training rows and rows after them, not other rows",
            reason="ROWS_NOT_PREDICTABLE",
        )
    return positions, n_after


class Standardizer:
    """Column means and scales of the training features (a constant column keeps scale 1)."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(axis=0)
        scale = x.std(axis=0)
        self.scale = np.where(scale > 0, scale, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


class ArimaModel(PickledModel):
    def __init__(
        self, features: list[str], train_index: pd.Index, scaler: Standardizer, result: Any
    ) -> None:
        self.plugin_key = ArimaPlugin.key
        self.features = features
        self.train_index = train_index
        self.scaler = scaler
        self.result = result

    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        exog = self.scaler(feature_matrix(X, self.features))
        positions, n_after = locate_rows(self.train_index, X.index)
        # In-sample rows: one-step-ahead predictions; later rows: the forecast from the end of
        # training, taking X's rows as the periods that follow it.
        in_sample = np.asarray(self.result.fittedvalues, np.float64)[positions]
        if n_after == 0:
            return in_sample
        forecast = self.result.forecast(steps=n_after, exog=exog[len(positions) :])
        return np.concatenate([in_sample, np.asarray(forecast, np.float64)])


class ArimaPlugin(ModelPlugin):
    key = "stat.arima"
    family = Family.STATISTICAL
    model_type = "arima"
    description = "ARIMA(p, d, q) with the features as exogenous regressors (statsmodels SARIMAX)."
    parameters = {
        "p": Param(1, "int", low=0, high=10),
        "d": Param(0, "int", low=0, high=2),
        "q": Param(0, "int", low=0, high=10),
        "trend": Param("c", "str", choices=("n", "c", "t", "ct")),
    }
    library = "statsmodels.tsa.statespace.sarimax.SARIMAX"
    reserved = {"exog": "the features are the exogenous regressors", "endog": "the target"}

    def library_defaults(self) -> Mapping[str, Any]:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        signature = inspect.signature(SARIMAX.__init__).parameters.values()
        return {
            arg.name: None if arg.default is inspect.Parameter.empty else arg.default
            for arg in signature
            if arg.kind is arg.POSITIONAL_OR_KEYWORD and arg.name not in ("self", "order")
        }

    def check_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # statsmodels' `order` is (p, d, q): it sets the three, and may not contradict them.
        if isinstance(params, Mapping) and "order" in params:
            params = dict(params)
            order = params.pop("order")
            if not isinstance(order, list | tuple) or len(order) != 3:
                raise invalid_parameter(self.key, "order", f"must be [p, d, q], got {order!r}")
            for name, value in zip("pdq", order, strict=True):
                if name in params and params[name] != value:
                    raise invalid_parameter(
                        self.key, "order", f"contradicts {name}={params[name]!r}; give one"
                    )
                params[name] = value
        return super().check_params(params)

    def _model(self, y: np.ndarray, x: np.ndarray, params: dict[str, Any]) -> Any:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        extra = {name: value for name, value in params.items() if name not in self.parameters}
        order = (params["p"], params["d"], params["q"])
        return SARIMAX(y, exog=x, order=order, trend=params["trend"], **extra)

    def _probe(self, params: dict[str, Any]) -> None:
        x, y = probe_data()
        self._model(y, x, params)

    def search_space(self) -> dict[str, ParamSpec]:
        # Returns are stationary: d stays 0 (and a constant cannot be combined with d > 0).
        return {
            "p": ParamSpec("int", 0, 3),
            "q": ParamSpec("int", 0, 2),
            "trend": ParamSpec("categorical", choices=("n", "c")),
        }

    def _check_combination(self, params: dict[str, Any]) -> dict[str, Any]:
        # Differencing removes trend terms below order d; statsmodels refuses them.
        lowest = {"n": None, "c": 0, "t": 1, "ct": 0}[params["trend"]]
        if lowest is not None and lowest < params["d"]:
            raise invalid_parameter(
                self.key, "trend", f"{params['trend']!r} has terms that d={params['d']} removes"
            )
        return params

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        x = X.to_numpy(dtype=np.float64)
        # Standardized regressors keep the likelihood well-conditioned (RSI ~ 50 beside returns
        # ~ 0.01 stops L-BFGS short of convergence).
        scaler = Standardizer(x)
        model = self._model(y.to_numpy(np.float64), scaler(x), params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; the fit is still usable
            result = model.fit(disp=False)
        return ArimaModel([str(c) for c in X.columns], X.index, scaler, result)


# arch's optimiser expects returns in percent; predictions are scaled back to y's units.
GARCH_SCALE = 100.0


class GarchModel(PickledModel):
    def __init__(
        self,
        features: list[str],
        train_index: pd.Index,
        train_y: np.ndarray,
        lags: int,
        result: Any,
    ) -> None:
        self.plugin_key = GarchPlugin.key
        self.features = features
        self.train_index = train_index
        self.train_y = train_y  # in percent, for the lags of an ARX mean
        self.lags = lags
        self.result = result

    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        x = feature_matrix(X, self.features)
        mean = np.asarray(self.result.params, np.float64)[: self.result.model.num_params]
        # Mean parameters: constant, AR lags 1..k (ARX only), then one slope per feature.
        constant, ar, slopes = mean[0], mean[1 : 1 + self.lags], mean[1 + self.lags :]
        regression = constant + x @ slopes
        if self.lags == 0:
            return regression / GARCH_SCALE
        return self._predict_arx(X.index, regression, ar) / GARCH_SCALE

    def _predict_arx(self, index: pd.Index, regression: np.ndarray, ar: np.ndarray) -> np.ndarray:
        positions, _ = locate_rows(self.train_index, index)
        # In-sample rows use observed lags; the first `lags` training rows have none: NaN.
        padded = np.concatenate([np.full(self.lags, np.nan), self.train_y])
        lagged = np.stack([padded[self.lags - k + positions] for k in range(1, self.lags + 1)])
        predictions = list(regression[: len(positions)] + ar @ lagged)
        # Rows after training take the model's own earlier predictions as their unknown lags.
        recent = list(self.train_y[-self.lags :])  # oldest first
        for value in regression[len(positions) :]:
            predictions.append(value + float(ar @ np.asarray(recent[::-1])))
            recent = [*recent[1:], predictions[-1]]
        return np.asarray(predictions, np.float64)


class GarchPlugin(ModelPlugin):
    key = "stat.garch"
    family = Family.STATISTICAL
    model_type = "garch"
    description = (
        "Least-squares (or ARX) mean on the features with GARCH(p, o, q) volatility (arch); "
        "predicts the conditional mean. Fitted on returns x 100."
    )
    parameters = {
        "mean": Param("LS", "str", choices=("LS", "ARX")),
        "lags": Param(0, "int", low=0, high=20),  # AR lags of the target, ARX only
        "p": Param(1, "int", low=0, high=5),
        "o": Param(0, "int", low=0, high=5),
        "q": Param(1, "int", low=0, high=5),
        "dist": Param("normal", "str", choices=("normal", "t", "skewt", "ged")),
    }
    library = "arch.arch_model"
    reserved = {
        "y": "the target",
        "x": "the features are the regressors",
        "rescale": "the target is scaled by 100 before the fit, and predictions back",
    }

    def library_defaults(self) -> Mapping[str, Any]:
        from arch import arch_model

        return {
            arg.name: arg.default
            for arg in inspect.signature(arch_model).parameters.values()
            if arg.name not in self.reserved
        }

    def _model(self, y: np.ndarray, x: np.ndarray, params: dict[str, Any]) -> Any:
        from arch import arch_model

        return arch_model(y, x=x, **{"vol": "GARCH", **params, "rescale": False})

    def _probe(self, params: dict[str, Any]) -> None:
        x, y = probe_data(64)
        self._model(y * GARCH_SCALE, x, params)

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "p": ParamSpec("int", 1, 2),
            "o": ParamSpec("int", 0, 1),
            "q": ParamSpec("int", 1, 2),
            "dist": ParamSpec("categorical", choices=("normal", "t", "skewt")),
        }

    def _check_combination(self, params: dict[str, Any]) -> dict[str, Any]:
        # Rejected rather than ignored: an LS mean has no lags, an ARX mean needs some.
        if (params["mean"] == "ARX") != (params["lags"] > 0):
            raise invalid_parameter(self.key, "lags", "must be > 0 with mean ARX and 0 with LS")
        if params["p"] + params["o"] == 0:
            raise invalid_parameter(self.key, "p", "p + o must be at least 1")
        return params

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        train_y = y.to_numpy(np.float64) * GARCH_SCALE
        model = self._model(train_y, X.to_numpy(dtype=np.float64), params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.fit(disp="off", show_warning=False)
        features = [str(c) for c in X.columns]
        return GarchModel(features, X.index, train_y, params["lags"], result)
