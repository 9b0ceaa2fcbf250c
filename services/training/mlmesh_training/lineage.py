"""Where a job is recorded besides the model: MLflow runs with lineage tags (a training's run
with per-fold step metrics; a study's or leaderboard's parent run with nested runs, ended by
`parent_run` when the job fails), and an Experiment row in the registry through the
experiments service's gRPC API."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlmesh.experiments.v1 import (
    experiment_pb2,
    experiments_service_pb2,
    experiments_service_pb2_grpc,
)
from mlmesh_common.errors import DomainError, Unavailable
from mlmesh_common.history import LoggedPoint, by_metric
from mlmesh_common.tenancy import DEFAULT_TENANT, TENANT_HEADER
from mlmesh_common.values import struct
from mlmesh_training.backtest import BacktestResult
from mlmesh_training.engine import CVResult

TENANT_TAG = "mlmesh.tenant"
# On the runs an async task starts itself (an AutoML leaderboard), its task id.
TASK_TAG = "mlmesh.task_id"
# Metrics per MLflow log_batch call, and per registry LogBatch call.
MLFLOW_BATCH = 1000
REGISTRY_BATCH = 10_000


def series_metrics(result: BacktestResult) -> list[tuple[str, float, int, int]]:
    """The stitched out-of-sample `oos_return` and `oos_equity` histories as (key, value,
    step, timestamp ms): step is the bar's index in the bars dataset, timestamp its time."""
    stamps = [int(t.value // 1_000_000) for t in result.times]
    steps = [int(i) for i in result.bars]
    return [
        (key, float(value), step, stamp)
        for key, values in (("oos_return", result.pnl), ("oos_equity", result.equity))
        for value, step, stamp in zip(values, steps, stamps, strict=True)
    ]


def detect_git_commit() -> str:
    """The checkout's HEAD, for the `git_commit` lineage tag; "unknown" outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class Lineage:
    tenant: str
    strategy_id: str
    git_commit: str
    dataset_version: str
    feature_version: str
    bars_id: str = ""  # the bars dataset whose content dataset_version names
    model_version: str = ""
    run_type: str = "training"

    def tags(self) -> dict[str, str]:
        tags = {
            "run_type": self.run_type,
            "strategy_id": self.strategy_id,
            "git_commit": self.git_commit,
            "dataset_version": self.dataset_version,
            "bars_id": self.bars_id,
            "feature_version": self.feature_version,
            "model_version": self.model_version,
        }
        # Untagged runs are the default tenant's, as the tracking service reads them.
        if self.tenant != DEFAULT_TENANT:
            tags[TENANT_TAG] = self.tenant
        return tags


class MlflowRecorder:
    """Logs trainings to MLflow with its client, off the event loop and with a bounded wait."""

    def __init__(self, tracking_uri: str, experiment_name: str, timeout_s: float) -> None:
        self._client = MlflowClient(tracking_uri=tracking_uri)
        self._uri = tracking_uri
        self._experiment_name = experiment_name
        self._timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(4, thread_name_prefix="mlflow")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def record(
        self,
        run_name: str,
        lineage: Lineage,
        params: dict[str, Any],
        result: CVResult,
        backtest: BacktestResult | None = None,
    ) -> str:
        return await self._call(self._record, run_name, lineage, params, result, backtest)

    async def _call(self, function, *args, **kwargs):
        call = functools.partial(function, *args, **kwargs)
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, call), self._timeout_s
            )
        except (TimeoutError, MlflowException, OSError) as exc:
            raise Unavailable(
                f"MLflow at {self._uri} is unavailable: {exc}", reason="MLFLOW_UNAVAILABLE"
            ) from exc

    def _experiment_id(self) -> str:
        experiment = self._client.get_experiment_by_name(self._experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(self._experiment_name)
        except MlflowException:  # created concurrently
            return self._client.get_experiment_by_name(self._experiment_name).experiment_id

    async def start_parent(
        self, run_name: str, lineage: Lineage, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """A parent run (a study, a leaderboard) that nested runs hang under; left RUNNING."""
        return await self._call(self._start_parent, run_name, lineage, params, tags)

    def _start_parent(self, run_name, lineage, params, tags) -> str:
        run = self._client.create_run(
            self._experiment_id(), run_name=run_name, tags={**lineage.tags(), **tags}
        )
        self._client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    async def log_child(
        self,
        parent_run_id: str,
        run_name: str,
        lineage: Lineage,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        status: str,
        times: tuple[float | None, float | None] = (None, None),
    ) -> str:
        """A finished nested run under `parent_run_id` (a trial, a candidate)."""
        return await self._call(
            self._log_child, parent_run_id, run_name, lineage, params, metrics, tags, status, times
        )

    def _log_child(self, parent, run_name, lineage, params, metrics, tags, status, times) -> str:
        started, finished = (None if t is None else int(t * 1000) for t in times)
        run = self._client.create_run(
            self._experiment_id(),
            run_name=run_name,
            start_time=started,
            tags={**lineage.tags(), **tags, "mlflow.parentRunId": parent},
        )
        run_id = run.info.run_id
        stamp = finished or run.info.start_time
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, v, stamp, 0) for k, v in sorted(metrics.items())],
            params=_params(params),
        )
        self._client.set_terminated(run_id, status, end_time=finished)
        return run_id

    async def end_task_runs(self, task_id: str) -> list[str]:
        """Ends as KILLED the runs still RUNNING that an interrupted attempt of task `task_id`
        started (tagged TASK_TAG); their ids."""
        return await self._call(self._end_task_runs, task_id)

    def _end_task_runs(self, task_id: str) -> list[str]:
        runs = self._client.search_runs(
            [self._experiment_id()],
            f"tags.`{TASK_TAG}` = '{task_id}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            self._client.set_terminated(run.info.run_id, "KILLED")
        return [run.info.run_id for run in runs]

    async def finish_parent(
        self, run_id: str, metrics: dict[str, float], tags: dict[str, str], status: str
    ) -> None:
        await self._call(self._finish_parent, run_id, metrics, tags, status)

    def _finish_parent(self, run_id, metrics, tags, status) -> None:
        now = int(time.time() * 1000)
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())],
            tags=[RunTag(k, v[:5000]) for k, v in sorted(tags.items())],
        )
        self._client.set_terminated(run_id, status)

    def _record(
        self,
        run_name: str,
        lineage: Lineage,
        params: dict,
        result: CVResult,
        backtest: BacktestResult | None,
    ) -> str:
        experiment_id = self._experiment_id()
        run = self._client.create_run(experiment_id, run_name=run_name, tags=lineage.tags())
        run_id = run.info.run_id
        now = run.info.start_time
        metrics = [
            Metric(f"fold_{name}", getattr(fold, name), now, fold.fold)
            for fold in result.folds
            for name in ("mse", "mae", "directional_accuracy")
        ]
        metrics += [Metric(name, value, now, 0) for name, value in result.summary.items()]
        if backtest is not None:
            metrics += [
                Metric(name, value, now, fold)
                for fold, values in backtest.fold_metrics()
                for name, value in values.items()
            ]
            metrics += [Metric(k, v, now, 0) for k, v in backtest.summary().items()]
            metrics += [Metric(k, v, stamp, step) for k, v, step, stamp in series_metrics(backtest)]
        self._client.log_batch(
            run_id,
            metrics=metrics[:MLFLOW_BATCH],
            params=_params(params),
            tags=[RunTag("mlmesh.n_folds", str(len(result.folds)))],
        )
        for start in range(MLFLOW_BATCH, len(metrics), MLFLOW_BATCH):
            self._client.log_batch(run_id, metrics=metrics[start : start + MLFLOW_BATCH])
        self._client.set_terminated(run_id, "FINISHED")
        return run_id


@contextlib.asynccontextmanager
async def parent_run(mlflow: MlflowRecorder, run_id: str) -> AsyncIterator[str]:
    """Ends the parent run `run_id` KILLED when the work inside is cancelled and FAILED when
    it raises, then lets the exception through. Ending it is best effort: the error that
    stopped the work is the one to report, not MLflow's."""
    try:
        yield run_id
    except asyncio.CancelledError:
        await asyncio.shield(_end_quietly(mlflow, run_id, "KILLED"))
        raise
    except Exception:
        await _end_quietly(mlflow, run_id, "FAILED")
        raise


async def _end_quietly(mlflow: MlflowRecorder, run_id: str, status: str) -> None:
    with contextlib.suppress(DomainError):
        await mlflow.finish_parent(run_id, {}, {}, status)


def _params(params: dict[str, Any]) -> list[Param]:
    """MLflow params: strings of at most 6000 characters, at most 100 per batch."""
    flat = {k: str(v)[:6000] for k, v in params.items()}
    return [Param(k, v) for k, v in sorted(flat.items())][:100]


class ExperimentsRecorder:
    """Writes Experiment rows through the experiments service's gRPC API."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = experiments_service_pb2_grpc.ExperimentServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def record_result(
        self,
        lineage: Lineage,
        mlflow_run_id: str,
        parameters: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        **fields: Any,
    ) -> str:
        """An Experiment row for a training, a study's best trial or a leaderboard's winner,
        with the lineage every one of them carries; returns its id."""
        return await self.record(
            lineage.tenant,
            {
                "strategy_id": lineage.strategy_id,
                "dataset_version": lineage.dataset_version,
                "feature_version": lineage.feature_version,
                "git_commit": lineage.git_commit,
                "mlflow_run_id": mlflow_run_id,
                "parameters": parameters,
                "metrics": metrics,
                "tags": {**tags, "bars_id": lineage.bars_id},
                **fields,
            },
        )

    async def record_series(
        self,
        tenant: str,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        points: list[tuple[str, float, int, int]],
    ) -> str:
        """A finished registry run of the Experiment `experiment_id` holding metric histories
        (key, value, step, timestamp ms); returns its id."""
        metadata = [(TENANT_HEADER, tenant)]
        try:
            run = await self._stub.CreateRun(
                experiments_service_pb2.CreateRunRequest(
                    experiment_id=experiment_id, name=name, tags=tags
                ),
                metadata=metadata,
                timeout=self._timeout_s,
            )
            for start in range(0, len(points), REGISTRY_BATCH):
                await self._stub.LogBatch(
                    experiments_service_pb2.LogBatchRequest(
                        run_id=run.id, series=_series(points[start : start + REGISTRY_BATCH])
                    ),
                    metadata=metadata,
                    timeout=self._timeout_s,
                )
            await self._stub.EndRun(
                experiments_service_pb2.EndRunRequest(run_id=run.id),
                metadata=metadata,
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"the experiments service at {self._address} failed: {exc.details()}",
                reason="EXPERIMENTS_UNAVAILABLE",
            ) from exc
        return run.id

    async def record(self, tenant: str, fields: dict[str, Any]) -> str:
        parameters = struct(fields.pop("parameters", {}))
        experiment = experiment_pb2.Experiment(parameters=parameters, **fields)
        try:
            created = await self._stub.CreateExperiment(
                experiments_service_pb2.CreateExperimentRequest(experiment=experiment),
                metadata=[(TENANT_HEADER, tenant)],
                timeout=self._timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"the experiments service at {self._address} failed: {exc.details()}",
                reason="EXPERIMENTS_UNAVAILABLE",
            ) from exc
        return created.id


def _series(points: list[LoggedPoint]) -> list[experiments_service_pb2.MetricSeries]:
    """(key, value, step, timestamp ms) points as one series per metric: the registry's compact
    log-batch shape."""
    return [
        experiments_service_pb2.MetricSeries(key=key, values=v, steps=s, timestamps=t)
        for key, (v, s, t) in by_metric(points).items()
    ]
