"""The PyTorch side of dl.lstm: the network, sliding windows and a seeded training loop. Kept apart
so that listing plugins does not import torch."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

# cuBLAS needs this workspace setting, before CUDA starts, for reproducible LSTM training on GPUs.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


class LstmRegressor(nn.Module):
    """LSTM over a window of feature rows; a linear head reads the last step's hidden state."""

    def __init__(self, n_features: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        # nn.LSTM drops out only between stacked layers; the head's dropout also covers one layer.
        between = dropout if num_layers > 1 else 0.0
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers, batch_first=True, dropout=between)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(windows)
        return self.head(self.dropout(output[:, -1])).squeeze(-1)


def sliding_windows(rows: np.ndarray, lookback: int) -> np.ndarray:
    """(n - lookback + 1, lookback, features): the window ending at each row from lookback - 1."""
    view = np.lib.stride_tricks.sliding_window_view(rows, lookback, axis=0).transpose(0, 2, 1)
    # A writable float32 copy: torch refuses to share memory with a read-only strided view.
    return np.ascontiguousarray(view, dtype=np.float32)


def training_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """One CPU thread: float32 reductions then round alike on any machine (and a small LSTM
    gains little from more threads beside single-threaded tree models)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for one fit without leaking the seed into the process's global RNG."""
    cuda_devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with _single_threaded(), torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


# The plugin's own parameters; every other one is a keyword argument of the optimizer.
NETWORK_PARAMETERS = {"lookback", "hidden_size", "num_layers", "dropout", "epochs", "batch_size"}


def optimizer(weights: Any, params: dict[str, Any]) -> torch.optim.Adam:
    options = {k: v for k, v in params.items() if k not in NETWORK_PARAMETERS}
    lr = options.pop("learning_rate")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    return torch.optim.Adam(weights or [torch.zeros(1, requires_grad=True)], lr=lr, **options)


def train(
    windows: np.ndarray, targets: np.ndarray, params: dict[str, Any], seed: int
) -> tuple[LstmRegressor, dict[str, Any]]:
    """Adam on mean squared error; returns the network on the CPU, in eval mode, so that
    predictions do not depend on where it was trained or loaded, and the optimizer's settings
    (plain values)."""
    device = training_device()
    with _seeded(seed, device):
        network = LstmRegressor(
            windows.shape[2], params["hidden_size"], params["num_layers"], params["dropout"]
        ).to(device)
        inputs = torch.as_tensor(windows, dtype=torch.float32, device=device)
        labels = torch.as_tensor(targets, dtype=torch.float32, device=device)
        adam = optimizer(list(network.parameters()), params)
        shuffler = torch.Generator().manual_seed(seed)
        network.train()
        for _ in range(params["epochs"]):
            order = torch.randperm(len(inputs), generator=shuffler)
            for batch in order.split(params["batch_size"]):
                batch = batch.to(device)
                adam.zero_grad()
                loss = nn.functional.mse_loss(network(inputs[batch]), labels[batch])
                loss.backward()
                adam.step()
    settings = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in adam.defaults.items()
        if value is None or isinstance(value, bool | int | float | tuple)
    }
    return network.cpu().eval(), settings


def predict(network: LstmRegressor, windows: np.ndarray) -> np.ndarray:
    with _single_threaded(), torch.no_grad():
        output = network(torch.as_tensor(windows, dtype=torch.float32))
    return output.numpy().astype(np.float64)


def dump(network: LstmRegressor, state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state": state, "weights": network.state_dict()}, buffer)
    return buffer.getvalue()


def load(payload: bytes) -> tuple[LstmRegressor, dict[str, Any]]:
    """The network (CPU, eval mode) and the state saved beside it by `dump`."""
    # weights_only: a saved model is tensors and plain values, never arbitrary objects.
    saved = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    state = saved["state"]
    params = state["params"]
    network = LstmRegressor(
        len(state["features"]), params["hidden_size"], params["num_layers"], params["dropout"]
    )
    network.load_state_dict(saved["weights"])
    return network.eval(), state
