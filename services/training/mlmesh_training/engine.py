"""Cross-validated training on Ray: every fold is fitted in its own Ray task, the final model on
all rows in another; the gRPC event loop only schedules and awaits them."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray
import structlog

from mlmesh_common.errors import DomainError, FailedPrecondition, Unavailable
from mlmesh_training.backtest import FoldPredictions
from mlmesh_training.cv import Fold
from mlmesh_training.local_ray import HeadFailed, LocalHead
from mlmesh_training.plugins import get_plugin

log = structlog.get_logger(__name__)

SUMMARY_METRICS = ("mse", "mae", "directional_accuracy")


@dataclass(frozen=True)
class FoldScore:
    fold: int
    n_train: int
    n_test: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    mse: float
    mae: float
    directional_accuracy: float
    node_id: str = ""  # the Ray node the fold was fitted on


@dataclass(frozen=True)
class CVResult:
    folds: list[FoldScore]
    # Each fold's out-of-sample predictions and training-row prediction std, in fold order.
    predictions: list[FoldPredictions] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, float]:
        """mean_/std_ of every fold metric (population std, as numpy's default)."""
        result: dict[str, float] = {}
        for name in SUMMARY_METRICS:
            values = np.array([getattr(f, name) for f in self.folds], dtype=float)
            result[f"mean_{name}"] = float(values.mean())
            result[f"std_{name}"] = float(values.std())
        return result


def score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """mse, mae and directional accuracy over the rows the model could predict. Rows
    predicted NaN (e.g. an LSTM's first window) are masked, never averaged in."""
    mask = np.isfinite(y_pred)
    if not mask.any():
        raise FailedPrecondition(
            "the model predicted no row of a test fold", reason="NO_PREDICTIONS"
        )
    truth, pred = y_true[mask], y_pred[mask]
    errors = pred - truth
    mse = float(np.mean(errors**2))
    mae = float(np.mean(np.abs(errors)))
    direction = float(np.mean(np.sign(pred) == np.sign(truth)))
    return mse, mae, direction


@dataclass(frozen=True)
class FoldEvaluation:
    """One scored fold of an evaluation, with where and when its Ray task ran."""

    score: FoldScore
    node_id: str
    started: float  # the task's start, epoch seconds
    finished: float  # this fold's end, epoch seconds
    predictions: FoldPredictions | None = None


# Fits folds in turn inside one Ray task and scores them out of sample. A tuning trial or an
# AutoML candidate is one such task, without retries: a trial lost with its worker is re-asked
# by the driver, not replayed behind its back. Training runs one task per fold, retried.
@ray.remote(num_cpus=1, max_retries=0)
def _evaluate(
    plugin_key: str,
    params: dict,
    seed: int,
    X: pd.DataFrame,
    y: pd.Series,
    folds,
    train_scale: bool = False,
) -> list[FoldEvaluation]:
    started = time.time()
    node_id = ray.get_runtime_context().get_node_id()
    plugin = get_plugin(plugin_key)
    truth = y.to_numpy()
    evaluations = []
    for fold in folds:
        fitted = plugin.fit(X.iloc[fold.train], y.iloc[fold.train], params, seed)
        # Feature rows before the test window are known at prediction time (no labels in them);
        # sequence models use them as context for the first test rows.
        predictions = fitted.predict(X.iloc[fold.test], history=X.iloc[: fold.test[0]])
        predictions = np.asarray(predictions, dtype=float)
        score = fold_score(fold, X.index, truth, predictions, node_id)
        # The backtest's `proportional` positions divide by this (docs/statistics.md).
        scale = _train_scale(fitted, X.iloc[fold.train]) if train_scale else float("nan")
        kept = FoldPredictions(fold.index, fold.test, predictions, scale, fold.test_groups)
        evaluations.append(FoldEvaluation(score, node_id, started, time.time(), kept))
    return evaluations


def _train_scale(fitted, X_train: pd.DataFrame) -> float:
    """The std (ddof=1) of a fitted model's finite predictions on its own training rows; NaN
    when it has none to take."""
    values = np.asarray(fitted.predict(X_train), dtype=float)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if values.size > 1 else float("nan")


async def evaluate(
    plugin_key: str,
    params: dict,
    seed: int,
    X_ref,
    y_ref,
    folds: Sequence[Fold],
    *,
    fold_by_fold: bool = False,
    train_scale: bool = False,
    retries: int = 0,
) -> AsyncIterator[FoldEvaluation]:
    """Runs one cross-validation on Ray and yields its scored folds. The whole CV is one Ray
    task; with `fold_by_fold` (pruning) each fold is its own task, started only once the caller
    has taken the previous fold's score, so that a pruned trial stops between folds. Plain tasks,
    not streaming generators: the Ray Client (`ray://`) supports no generators. `retries`: how
    often Ray runs a task again whose worker died (never for the plugin's own errors)."""
    chunks = [[fold] for fold in folds] if fold_by_fold else [list(folds)]
    task = _evaluate.options(max_retries=retries) if retries else _evaluate
    for chunk in chunks:
        ref = task.remote(plugin_key, params, seed, X_ref, y_ref, chunk, train_scale)
        try:
            evaluations = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        for evaluation in evaluations:
            yield evaluation


def task_error(error: ray.exceptions.RayTaskError) -> str:
    """What a failed evaluation reports: the plugin's own message, not Ray's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, DomainError):
        return cause.message
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(error).splitlines()[0]


def cluster_cpus() -> int:
    """The CPUs of the Ray cluster's live nodes."""
    return int(ray.cluster_resources().get("CPU", 0))


class ClusterLost(Unavailable):
    """Evaluations keep losing their workers: the Ray cluster is going away."""

    default_reason = "RAY_WORKERS_LOST"


@ray.remote(num_cpus=1)
def _fit_full(plugin_key: str, params: dict, seed: int, X: pd.DataFrame, y: pd.Series) -> bytes:
    return get_plugin(plugin_key).fit(X, y, params, seed).save()


# Without a cluster the service runs a local Ray of its own, started by the first job that needs
# it (`ensure_ray`) in a head process of its own (local_ray.py): about 435 MB in 9 processes,
# besides the head's own, that an idle mesh does without. A configured cluster (`address`) is
# joined at start, so that a bad address fails there.
_ray_lock = threading.Lock()
_local_num_cpus: int | None = None
_local_head: LocalHead | None = None
_ray_stopped = False
_RAY_OPTIONS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
LOCAL_START_TIMEOUT_S = 120.0
LOCAL_STOP_TIMEOUT_S = 5.0


def start_ray(address: str | None, num_cpus: int | None, connect_timeout_s: float = 120) -> None:
    """Connects to the cluster at `address` (a GCS address, or `ray://` for the Ray Client) now,
    retrying while the cluster comes up (a head starts its agents after it accepts
    connections). Without one, only remembers `num_cpus` for the local Ray that `ensure_ray`
    starts when a job first needs it."""
    global _local_num_cpus
    if not address:
        _local_num_cpus = num_cpus
        return
    with _ray_lock:
        if not ray.is_initialized():
            _connect(address, connect_timeout_s)


def _connect(address: str, connect_timeout_s: float) -> None:
    deadline = time.monotonic() + connect_timeout_s
    while True:
        try:
            ray.init(address=address, **_RAY_OPTIONS)
            return
        except ConnectionError as error:
            ray.shutdown()
            if time.monotonic() >= deadline:
                raise
            log.warning("ray cluster not ready; retrying", address=address, error=str(error))
            time.sleep(2)


def _start_local() -> None:
    global _local_head
    with _ray_lock:
        if _ray_stopped:
            raise Unavailable("the training service is shutting down", reason="SHUTTING_DOWN")
        if ray.is_initialized():
            return
        log.info("starting a local ray", num_cpus=_local_num_cpus)
        if "RAY_AUTH_MODE" not in os.environ:
            # Token authentication, as ray.init gives a cluster it starts (the token is
            # ~/.ray/auth_token, made if missing): the head inherits the mode, and this driver
            # needs it too, as it joins by address. Ray reads the mode once, hence the reload.
            os.environ["RAY_AUTH_MODE"] = "token"
            ray._raylet.Config.initialize("")
        try:
            head = LocalHead.start(_local_num_cpus, LOCAL_START_TIMEOUT_S)
        except HeadFailed as error:
            raise Unavailable(str(error), reason="RAY_UNAVAILABLE") from error
        try:
            ray.init(address=head.address, **_RAY_OPTIONS)
        except Exception as error:  # the next job starts another
            ray.shutdown()
            head.stop(LOCAL_STOP_TIMEOUT_S)
            raise Unavailable(
                f"could not join the local Ray: {error}", reason="RAY_UNAVAILABLE"
            ) from error
        _local_head = head
        log.info("local ray started", address=head.address, pid=head.process.pid)


# Not the loop's default executor: asyncio.run waits for that one's threads on the way out.
_ray_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ray-start")


async def ensure_ray() -> None:
    """Ray, started (once, whoever asks first) when no cluster was joined at start. Every job
    calls this before its first Ray call; starting blocks, so it runs off the event loop."""
    if not ray.is_initialized():
        await asyncio.get_running_loop().run_in_executor(_ray_starter, _start_local)


def _shutdown(timeout_s: float) -> None:
    global _ray_stopped
    with _ray_lock:  # waits for a local Ray still starting, then stops it too
        _ray_stopped = True
        ray.shutdown()
        if _local_head is not None:
            _local_head.stop(timeout_s)


def stop_ray(timeout_s: float) -> bool:
    """Disconnects from Ray and stops the local Ray if a job started one. False when that did
    not finish within `timeout_s`: Ray's driver blocks for about 10 s when its node died first,
    as a SIGTERM to the whole process group (honcho's, Ctrl-C) kills it. The local Ray's head
    stops by itself once this process is gone."""
    stopping = threading.Thread(
        target=_shutdown, args=(timeout_s,), name="ray-shutdown", daemon=True
    )
    stopping.start()
    stopping.join(timeout_s)
    return not stopping.is_alive()


Progress = Callable[[int, int], Awaitable[None]]


async def cross_validate(
    plugin_key: str,
    params: dict,
    seed: int,
    X: pd.DataFrame,
    y: pd.Series,
    folds: Sequence[Fold],
    on_progress: Progress | None = None,
    train_scale: bool = False,
) -> CVResult:
    """Fits every fold in parallel on Ray and scores it out of sample; with `train_scale`
    each fold also predicts its training rows for the std of those predictions."""
    await ensure_ray()
    X_ref, y_ref = ray.put(X), ray.put(y)
    # Ray's default of three retries: a lost fold is simply fitted again.
    fit = _evaluate.options(max_retries=3)
    refs = {
        fold.index: fit.remote(plugin_key, params, seed, X_ref, y_ref, [fold], train_scale)
        for fold in folds
    }

    async def fitted(fold: Fold) -> list[FoldEvaluation]:
        return await refs[fold.index]

    scores: dict[int, FoldScore] = {}
    kept: dict[int, FoldPredictions] = {}
    tasks = [asyncio.ensure_future(fitted(fold)) for fold in folds]
    try:
        for done in asyncio.as_completed(tasks):
            [evaluation] = await done
            scores[evaluation.score.fold] = evaluation.score
            kept[evaluation.score.fold] = evaluation.predictions
            if on_progress is not None:
                await on_progress(len(scores), len(folds))
    except BaseException:
        # Cancelled (or a fold failed): stop the other folds' Ray tasks too.
        for task in tasks:
            task.cancel()
        for ref in refs.values():
            ray.cancel(ref)
        raise
    return CVResult([scores[f.index] for f in folds], [kept[f.index] for f in folds])


def fold_score(
    fold: Fold, index: pd.DatetimeIndex, y: np.ndarray, pred: np.ndarray, node_id: str = ""
) -> FoldScore:
    mse, mae, direction = score(y[fold.test], pred)
    return FoldScore(
        fold=fold.index,
        n_train=len(fold.train),
        n_test=len(fold.test),
        train_start=index[fold.train[0]],
        train_end=index[fold.train[-1]],
        test_start=index[fold.test[0]],
        test_end=index[fold.test[-1]],
        mse=mse,
        mae=mae,
        directional_accuracy=direction,
        node_id=node_id,
    )


async def fit_full(
    plugin_key: str, params: dict, seed: int, X: pd.DataFrame, y: pd.Series
) -> bytes:
    """The model fitted on every row, serialised by its plugin."""
    await ensure_ray()
    return await _fit_full.remote(plugin_key, params, seed, X, y)
