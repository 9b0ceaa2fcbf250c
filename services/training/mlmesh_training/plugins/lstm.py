"""dl.lstm: a small PyTorch LSTM over sliding windows of standardized features; trains on CUDA
when available, predicts on the CPU."""

from __future__ import annotations

import inspect
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
    feature_matrix,
    invalid_artifact,
    pack_artifact,
)


def _mean_and_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = values.std(axis=0)
    return values.mean(axis=0), np.where(scale > 0, scale, 1.0)


class LstmModel(FittedModel):
    """The trained network plus what predictions need: feature order, scalers, lookback."""

    def __init__(self, network: Any, state: dict[str, Any]) -> None:
        self.plugin_key = LstmPlugin.key
        self.network = network
        self.state = state
        self.features = list(state["features"])
        self.lookback = int(state["params"]["lookback"])

    def predict(self, X: pd.DataFrame, history: pd.DataFrame | None = None) -> np.ndarray:
        from mlmesh_training.plugins import _lstm_net

        context = self._context(X, history)
        rows = np.vstack([context, feature_matrix(X, self.features)])
        scaled = (rows - np.asarray(self.state["x_mean"])) / np.asarray(self.state["x_scale"])
        predictions = np.full(len(X), np.nan)
        if len(rows) < self.lookback:
            return predictions
        windows = _lstm_net.sliding_windows(scaled, self.lookback)
        # X rows without lookback - 1 rows before them (in history or X) stay NaN.
        first = self.lookback - 1 - len(context)
        outputs = _lstm_net.predict(self.network, windows)
        predictions[first:] = outputs * self.state["y_scale"] + self.state["y_mean"]
        return predictions

    def _context(self, X: pd.DataFrame, history: pd.DataFrame | None) -> np.ndarray:
        """Up to lookback - 1 feature rows that immediately precede X."""
        needed = self.lookback - 1
        if history is None or needed == 0 or len(history) == 0:
            return np.empty((0, len(self.features)))
        if len(X) and not history.index[-1] < X.index[0]:
            raise InvalidArgument("history must end before X's first row", reason="INVALID_HISTORY")
        return feature_matrix(history, self.features)[-needed:]

    def save(self) -> bytes:
        from mlmesh_training.plugins import _lstm_net

        payload = _lstm_net.dump(self.network, self.state)
        return pack_artifact(self.plugin_key, self.format_version, payload)


class LstmPlugin(ModelPlugin):
    key = "dl.lstm"
    family = Family.DEEP_LEARNING
    model_type = "lstm"
    description = (
        "PyTorch LSTM over windows of `lookback` standardized feature rows; the first "
        "lookback - 1 rows without history are not predicted (NaN)."
    )
    parameters = {
        "lookback": Param(20, "int", low=1, high=512),
        "hidden_size": Param(32, "int", low=1, high=1024),
        "num_layers": Param(1, "int", low=1, high=8),
        "dropout": Param(0.0, "float", low=0.0, high=0.9),
        "epochs": Param(15, "int", low=1, high=1000),
        "batch_size": Param(64, "int", low=1),
        "learning_rate": Param(1e-3, "float", positive=True),
    }
    # Beyond these, the keyword arguments of the optimizer (weight_decay, betas, eps, amsgrad).
    library = "torch.optim.Adam"
    reserved = {"params": "the network's weights", "lr": "the plugin's learning_rate"}

    def library_defaults(self) -> Mapping[str, Any]:
        import torch

        return {
            arg.name: arg.default
            for arg in inspect.signature(torch.optim.Adam.__init__).parameters.values()
            if arg.name not in ("self", *self.reserved)
        }

    def _probe(self, params: dict[str, Any]) -> None:
        from mlmesh_training.plugins import _lstm_net

        _lstm_net.optimizer([], params)

    def search_space(self) -> dict[str, ParamSpec]:
        return {
            "lookback": ParamSpec("int", 5, 30, step=5),
            "hidden_size": ParamSpec("int", 8, 64, log=True),
            "num_layers": ParamSpec("int", 1, 2),
            "dropout": ParamSpec("float", 0.0, 0.3),
            "epochs": ParamSpec("int", 5, 25),
            "batch_size": ParamSpec("categorical", choices=(64, 128)),
            "learning_rate": ParamSpec("float", 1e-4, 1e-2, log=True),
        }

    def _fit(self, X: pd.DataFrame, y: pd.Series, params: dict[str, Any], seed: int) -> FittedModel:
        lookback = params["lookback"]
        if len(X) <= lookback:
            raise TooLittleData(
                f"dl.lstm needs more than lookback={lookback} training rows, got {len(X)}"
            )
        # After the checks: a fit that cannot run never pays for importing torch.
        from mlmesh_training.plugins import _lstm_net

        x_mean, x_scale = _mean_and_scale(X.to_numpy(dtype=np.float64))
        y_mean, y_scale = _mean_and_scale(y.to_numpy(dtype=np.float64))
        scaled_x = (X.to_numpy(dtype=np.float64) - x_mean) / x_scale
        scaled_y = (y.to_numpy(dtype=np.float64) - y_mean) / y_scale
        windows = _lstm_net.sliding_windows(scaled_x, lookback)
        # The window ending at row t predicts y[t]: the target is already a forward return.
        network, optimizer = _lstm_net.train(windows, scaled_y[lookback - 1 :], params, seed)
        state = {
            "features": [str(c) for c in X.columns],
            "params": dict(params),
            "optimizer": optimizer,  # the settings the optimizer trained with
            # Plain floats: exact in float64, and loadable with torch.load(weights_only=True).
            "x_mean": x_mean.tolist(),
            "x_scale": x_scale.tolist(),
            "y_mean": float(y_mean),
            "y_scale": float(y_scale),
        }
        return LstmModel(network, state)

    def _load(self, payload: bytes) -> FittedModel:
        from mlmesh_training.plugins import _lstm_net

        try:
            network, state = _lstm_net.load(payload)
        except Exception as error:  # torch raises many types for a corrupt file
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise invalid_artifact(f"unreadable dl.lstm artifact: {first_line}") from error
        return LstmModel(network, state)
