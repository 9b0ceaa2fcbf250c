"""The training service's use cases: models, datasets, cross-validated training with its
lineage, and background tasks; tenancy and validation rules over the stores."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import ray
from google.protobuf import json_format

from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh_common.artifacts import ArtifactStore, parse_upload
from mlmesh_common.errors import (
    Conflict,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from mlmesh_common.resources import Page, check_owned, is_uuid, page, page_window
from mlmesh_training import datasets as ds
from mlmesh_training import engine, tuning
from mlmesh_training.automl import AutoML
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.entities import Dataset, Model, Task, struct, timestamp
from mlmesh_training.lineage import ExperimentsRecorder, Lineage, MlflowRecorder
from mlmesh_training.plugins import get_plugin, plugins
from mlmesh_training.plugins.base import check_seed
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.tasks import TaskRunner
from mlmesh_training.tuning import EvalData, StudySpec, Tuner

MAX_PREVIEW_ROWS = 1000
DEFAULT_TRIALS = 30
MAX_PARALLEL = 1024
MAX_CANDIDATES = 20
MAX_AUTOML_TRIALS = 200
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The study's user attribute naming its MLflow parent run.
MLFLOW_RUN = "mlmesh.mlflow_run_id"
FAMILIES = ("statistical", "machine_learning", "deep_learning", "ensemble")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TrainingData:
    """The rows a request trains on, its folds, and the versions of the data behind them."""

    X: pd.DataFrame
    y: pd.Series
    feature_columns: list[str]
    folds: list
    dataset_version: str
    feature_version: str
    bars: Dataset  # the dataset the target came from

    def shared(self) -> EvalData:
        """The data in Ray's object store, once for every evaluation that uses it."""
        return EvalData(ray.put(self.X), ray.put(self.y), self.folds)


@dataclass(frozen=True)
class TrainJob:
    """A validated training request: everything checked before any work starts."""

    model: Model
    plugin_key: str
    params: dict[str, Any]
    seed: int
    data: TrainingData
    strategy_id: str


@dataclass(frozen=True)
class TuneJob:
    """A validated tuning request."""

    study: StudySpec
    study_name: str  # as the tenant named it
    data: TrainingData
    strategy_id: str


@dataclass(frozen=True)
class AutoMLJob:
    """A validated AutoML request."""

    candidates: dict[str, dict[str, Any]]
    metric: str
    direction: str
    seed: int
    tune_trials: int
    ensemble_top_k: int
    max_parallel: int
    data: TrainingData
    strategy_id: str


class TrainingService:
    def __init__(
        self,
        store: TrainingStore,
        artifacts: ArtifactStore,
        mlflow: MlflowRecorder,
        experiments: ExperimentsRecorder,
        git_commit: str,
        tuner: Tuner,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._mlflow = mlflow
        self._experiments = experiments
        self._git_commit = git_commit
        self._clock = clock
        self._tuner = tuner
        self.tasks = TaskRunner(store, clock)

    # --- models --------------------------------------------------------------------------

    async def create_model(
        self, tenant: str, name: str, model_type: str, family: str, parameters: dict[str, Any]
    ) -> Model:
        if not name.strip() or len(name) > 255:
            raise InvalidArgument("name must be 1..255 characters", reason="INVALID_NAME")
        plugin = self._plugin_for(model_type, family)
        plugin.check_params(parameters)
        now = self._clock()
        model = Model(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=name,
            model_type=model_type,
            family=str(plugin.family),
            plugin_key=plugin.key,
            parameters=parameters,
            version=1,
            created_at=now,
            updated_at=now,
        )
        await self._store.create_model(model)
        return model

    def _plugin_for(self, model_type: str, family: str):
        if family and family not in FAMILIES:
            raise InvalidArgument(
                f"family must be one of {', '.join(FAMILIES)}", reason="INVALID_FAMILY"
            )
        if not model_type:
            raise InvalidArgument("model_type is required", reason="INVALID_MODEL_TYPE")
        try:
            plugin = get_plugin(model_type)
        except InvalidArgument:
            plugin = None
        if plugin is None or (family and str(plugin.family) != family):
            valid = [
                name
                for p in plugins()
                if not family or str(p.family) == family
                for name in (p.key, p.model_type)
            ]
            raise InvalidArgument(
                f"unknown model_type {model_type!r}"
                + (f" for family {family}" if family else "")
                + f"; valid: {', '.join(valid)}",
                reason="INVALID_MODEL_TYPE",
                metadata={"valid": ",".join(valid)},
            )
        return plugin

    async def get_model(self, tenant: str, model_id: str) -> Model:
        model = await self._store.get_model(model_id) if is_uuid(model_id) else None
        check_owned(model, tenant, "model", model_id)
        return model

    async def list_models(
        self, tenant: str, family: str = "", skip: int = 0, limit: int = 0, page_token: str = ""
    ) -> Page:
        if family and family not in FAMILIES:
            raise InvalidArgument(
                f"family must be one of {', '.join(FAMILIES)}", reason="INVALID_FAMILY"
            )
        offset, limit = page_window(limit, skip, page_token)
        models, total = await self._store.list_models(tenant, family, offset, limit)
        return page(models, offset, total)

    async def update_model(
        self,
        tenant: str,
        model_id: str,
        *,
        name: str = "",
        parameters: dict[str, Any] | None = None,
        version: int = 0,
    ) -> Model:
        model = await self.get_model(tenant, model_id)
        if version and version != model.version:
            raise Conflict(
                f"model {model_id} is at version {model.version}, not {version}",
                reason="VERSION_MISMATCH",
                metadata={"current_version": str(model.version)},
            )
        changes: dict[str, Any] = {"updated_at": self._clock()}
        if name:
            if len(name) > 255:
                raise InvalidArgument("name must be 1..255 characters", reason="INVALID_NAME")
            changes["name"] = name
        if parameters is not None:
            get_plugin(model.plugin_key).check_params(parameters)
            changes["parameters"] = parameters
        if not await self._store.update_model(model_id, model.version, changes):
            raise Conflict(f"model {model_id} changed concurrently", reason="VERSION_MISMATCH")
        return await self.get_model(tenant, model_id)

    async def delete_model(self, tenant: str, model_id: str) -> None:
        await self.get_model(tenant, model_id)
        await self._store.delete_model(model_id)

    # --- datasets ------------------------------------------------------------------------

    async def create_dataset(
        self,
        tenant: str,
        *,
        name: str,
        kind: str,
        symbol: str,
        timeframe: str,
        content_type: str,
        body: bytes,
    ) -> tuple[Dataset, bool]:
        """The new dataset and True, or the tenant's existing one of identical content and
        metadata and False."""
        if not symbol or len(symbol) > 64:
            raise InvalidArgument("symbol must be 1..64 characters", reason="INVALID_SYMBOL")
        timeframe = timeframe or "1d"
        # Multipart with a `file` part, or the raw body (artifact_path names the table).
        _, data = parse_upload(content_type, body, "upload")
        frame = ds.parse_table(data, kind)
        version_hash = hashlib.sha256(data).hexdigest()
        # Content-addressed: datasets of one content and kind share the table, and an upload
        # that turns out to be an existing dataset rewrites the same file, leaving no orphan.
        stored = await self._artifacts.put(
            tenant, "datasets", version_hash, f"{kind}.parquet", ds.to_parquet(frame)
        )
        dataset = Dataset(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=(name or f"{symbol}-{kind}-{timeframe}")[:255],
            kind=kind,
            symbol=symbol,
            timeframe=timeframe,
            columns=list(frame.columns),
            row_count=len(frame),
            start_date=ds.epoch_ms(frame.index[0]),
            end_date=ds.epoch_ms(frame.index[-1]),
            version_hash=version_hash,
            storage_uri=stored.uri,
            created_at=self._clock(),
        )
        return await self._store.create_dataset(dataset)

    async def get_dataset(self, tenant: str, dataset_id: str) -> Dataset:
        found = await self._store.get_datasets([dataset_id]) if is_uuid(dataset_id) else {}
        dataset = found.get(dataset_id)
        check_owned(dataset, tenant, "dataset", dataset_id)
        return dataset

    async def list_datasets(
        self, tenant: str, filters: dict[str, str], skip=0, limit=0, page_token=""
    ) -> Page:
        offset, limit = page_window(limit, skip, page_token)
        items, total = await self._store.list_datasets(tenant, filters, offset, limit)
        return page(items, offset, total)

    async def _frame(self, dataset: Dataset) -> pd.DataFrame:
        tenant, hash_, kind = dataset.tenant, dataset.version_hash, dataset.kind
        try:
            data = await self._artifacts.get(tenant, "datasets", hash_, f"{kind}.parquet")
        except NotFound:  # uploaded before tables were content-addressed: its own folder
            data = await self._artifacts.get(tenant, "datasets", dataset.id, "data.parquet")
        return ds.from_parquet(data)

    async def preview_dataset(
        self, tenant: str, dataset_id: str, rows: int
    ) -> tuple[list[str], list[dict]]:
        if rows < 0:
            raise InvalidArgument("rows must be >= 0", reason="INVALID_ROWS")
        dataset = await self.get_dataset(tenant, dataset_id)
        frame = (await self._frame(dataset)).head(min(rows or 20, MAX_PREVIEW_ROWS))
        records = [
            {"timestamp": moment.isoformat(), **{k: _json_number(v) for k, v in row.items()}}
            for moment, row in zip(frame.index, frame.to_dict("records"), strict=True)
        ]
        return list(frame.columns), records

    async def delete_dataset(self, tenant: str, dataset_id: str) -> None:
        await self.get_dataset(tenant, dataset_id)
        await self._store.delete_dataset(dataset_id)

    # --- training ------------------------------------------------------------------------

    async def prepare(self, tenant: str, model_id: str, request: pb.TrainModelRequest) -> TrainJob:
        """Every check of a training request (ids, dates, CV config, 422 on too little data),
        shared by the synchronous and asynchronous paths."""
        model = await self.get_model(tenant, model_id)
        plugin = get_plugin(model.plugin_key)
        params = plugin.check_params(model.parameters)
        seed = check_seed(request.seed) if request.HasField("seed") else 0
        return TrainJob(
            model=model,
            plugin_key=model.plugin_key,
            params=params,
            # A library-level seed among the parameters wins; the run records the one used.
            seed=plugin.seed_used(params, seed),
            data=await self._training_data(tenant, request.dataset, request.cv),
            strategy_id=request.strategy_id,
        )

    async def _training_data(
        self, tenant: str, spec: pb.DatasetSpec, cv_message: pb.CVConfig
    ) -> TrainingData:
        """The dataset spec resolved to rows and folds: ids, dates and CV checked, 422 when
        too few rows align."""
        horizon = spec.target_horizon or 1
        start = ds.parse_date(spec.start_date, "start_date")
        end = ds.parse_date(spec.end_date, "end_date")
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("start_date must be before end_date", reason="INVALID_DATES")
        features = await self._feature_datasets(tenant, list(spec.feature_ids))
        bars = await self._bars(tenant, spec)
        close = (await self._frame(bars))["close"]
        frames = [(d.name or d.id[:8], await self._frame(d)) for d in features]
        assembled = ds.assemble(close, frames, target_horizon=horizon, start=start, end=end)
        cv = _cv_config(cv_message)
        cv.validate(len(assembled.X), horizon)
        feature_hashes = "".join(sorted(d.version_hash for d in features))
        return TrainingData(
            X=assembled.X,
            y=assembled.y,
            feature_columns=assembled.feature_columns,
            folds=split(len(assembled.X), cv, horizon),
            dataset_version=bars.version_hash[:16],
            feature_version=hashlib.sha256(feature_hashes.encode()).hexdigest()[:16],
            bars=bars,
        )

    async def _bars(self, tenant: str, spec: pb.DatasetSpec) -> Dataset:
        """The bars dataset `bars_id` names, or else the newest of the symbol and timeframe."""
        timeframe = spec.timeframe or "1d"
        if not spec.bars_id:
            bars = await self._store.find_bars(tenant, spec.symbol, timeframe)
            if bars is None:
                raise NotFound(
                    f"no bars dataset for symbol {spec.symbol!r} and timeframe {timeframe}",
                    reason="BARS_NOT_FOUND",
                    metadata={"symbol": spec.symbol, "timeframe": timeframe},
                )
            return bars
        bars = await self.get_dataset(tenant, spec.bars_id)
        if bars.kind != "bars":
            raise InvalidArgument(
                f"dataset {bars.id} is a {bars.kind} dataset, not bars",
                reason="NOT_A_BARS_DATASET",
                metadata={"bars_id": bars.id},
            )
        if (spec.symbol and spec.symbol != bars.symbol) or timeframe != bars.timeframe:
            raise InvalidArgument(
                f"bars dataset {bars.id} is {bars.symbol} {bars.timeframe}, not "
                f"{spec.symbol or bars.symbol} {timeframe}",
                reason="BARS_MISMATCH",
                metadata={"bars_id": bars.id},
            )
        return bars

    async def _feature_datasets(self, tenant: str, ids: list[str]) -> list[Dataset]:
        if not ids:
            raise InvalidArgument(
                "dataset.feature_ids must name at least one dataset", reason="MISSING_FEATURES"
            )
        found = await self._store.get_datasets([i for i in ids if is_uuid(i)])
        foreign = [i for i in ids if i in found and found[i].tenant != tenant]
        if foreign:
            raise PermissionDenied(
                f"datasets belong to another tenant: {', '.join(foreign)}",
                reason="TENANT_MISMATCH",
            )
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(
                f"datasets not found: {', '.join(missing)}",
                reason="DATASET_NOT_FOUND",
                metadata={"dataset_ids": ",".join(missing)},
            )
        return [found[i] for i in ids]

    async def train(self, tenant: str, job: TrainJob, progress=None) -> pb.TrainModelResponse:
        data = job.data
        total = len(data.folds) + 1

        async def fold_done(done: int, _folds: int) -> None:
            if progress is not None:
                await progress(done, total, f"{done}/{len(data.folds)} folds fitted")

        result = await engine.cross_validate(
            job.plugin_key, job.params, job.seed, data.X, data.y, data.folds, fold_done
        )
        blob = await engine.fit_full(job.plugin_key, job.params, job.seed, data.X, data.y)
        model = job.model
        version = model.version + 1
        stored = await self._artifacts.put(
            tenant, "models", model.id, f"v{version}/model.bin", blob
        )
        summary = result.summary
        lineage = replace(
            self._lineage(tenant, data, job.strategy_id, "training"), model_version=str(version)
        )
        run_id = await self._mlflow.record(
            f"{model.name}-v{version}",
            lineage,
            {"plugin_key": job.plugin_key, "seed": job.seed, **job.params},
            result,
        )
        experiment_id = await self._record_experiment(
            tenant,
            data,
            job.strategy_id,
            run_id,
            {"plugin_key": job.plugin_key, "seed": job.seed, **job.params},
            summary,
            {"model_id": model.id, "run_type": "training"},
            model_version=str(version),
            artifacts={"model": stored.uri},
        )
        changes = {
            "artifact_uri": stored.uri,
            "metrics": summary,
            "mlflow_run_id": run_id,
            "updated_at": self._clock(),
        }
        if not await self._store.update_model(model.id, model.version, changes):
            raise Conflict(f"model {model.id} changed while it trained", reason="VERSION_MISMATCH")
        if progress is not None:
            await progress(total, total, "done")
        return pb.TrainModelResponse(
            model_id=model.id,
            artifact_uri=stored.uri,
            cv_metrics=pb.CVMetrics(
                folds=[
                    pb.FoldMetrics(
                        fold=f.fold,
                        n_train=f.n_train,
                        n_test=f.n_test,
                        train_start=timestamp(ds.epoch_ms(f.train_start)),
                        train_end=timestamp(ds.epoch_ms(f.train_end)),
                        test_start=timestamp(ds.epoch_ms(f.test_start)),
                        test_end=timestamp(ds.epoch_ms(f.test_end)),
                        mse=f.mse,
                        mae=f.mae,
                        directional_accuracy=f.directional_accuracy,
                        node_id=f.node_id,
                    )
                    for f in result.folds
                ],
                n_folds=len(result.folds),
                **summary,
            ),
            n_train_rows=len(data.X),
            feature_columns=data.feature_columns,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            model_version=version,
            bars_id=data.bars.id,
            bars_version_hash=data.bars.version_hash,
        )

    async def train_async(self, tenant: str, job: TrainJob, request: dict[str, Any]) -> Task:
        async def work(progress) -> dict[str, Any]:
            return _message_dict(await self.train(tenant, job, progress))

        return await self.tasks.submit(tenant, "train", request, work)

    # --- tuning --------------------------------------------------------------------------

    async def prepare_tune(
        self,
        tenant: str,
        request: pb.TuneModelRequest,
        param_space: dict[str, dict[str, Any]],
        fixed_params: dict[str, Any],
    ) -> TuneJob:
        """Every check of a tuning request, before any trial runs."""
        if not request.plugin_key:
            raise InvalidArgument("plugin_key is required", reason="INVALID_PLUGIN")
        plugin = get_plugin(request.plugin_key)
        checked = plugin.check_params(fixed_params)
        fixed = {name: checked[name] for name in fixed_params}
        space = tuning.check_space(plugin, param_space, fixed)
        if not space:
            raise InvalidArgument(
                f"{plugin.key} has no default search space; give a param_space",
                reason="EMPTY_SEARCH_SPACE",
            )
        n_trials = request.n_trials or DEFAULT_TRIALS
        if not 1 <= n_trials <= tuning.MAX_TRIALS:
            raise InvalidArgument(
                f"n_trials must be 1..{tuning.MAX_TRIALS}", reason="INVALID_N_TRIALS"
            )
        metric = tuning.resolve_metric(request.metric)
        direction = tuning.resolve_direction(request.direction, metric)
        timeout_s = request.timeout_s if request.HasField("timeout_s") else None
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise InvalidArgument("timeout_s must be a positive number", reason="INVALID_TIMEOUT")
        seed = check_seed(request.seed) if request.HasField("seed") else None
        max_parallel = _max_parallel(request.max_parallel)
        study_name = request.study_name or f"tune-{uuid.uuid4().hex[:12]}"
        if not STUDY_NAME.fullmatch(study_name):
            raise InvalidArgument(
                "study_name must be 1..128 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit",
                reason="INVALID_STUDY_NAME",
            )
        data = await self._training_data(tenant, request.dataset, request.cv)
        identity = {
            "plugin_key": plugin.key,
            "param_space": {name: spec.to_dict() for name, spec in sorted(space.items())},
            "fixed_params": fixed,
            "metric": metric,
            "direction": direction,
            "dataset": _message_dict(request.dataset),
            "dataset_version": data.dataset_version,
            "feature_version": data.feature_version,
            "cv": _message_dict(request.cv),
        }
        study = tuning.StudySpec(
            name=f"{tenant}/{study_name}",
            plugin_key=plugin.key,
            space=space,
            fixed=fixed,
            n_trials=n_trials,
            metric=metric,
            direction=direction,
            seed=seed,
            timeout_s=timeout_s,
            max_parallel=max_parallel,
            pruning=request.pruning,
            identity=identity,
        )
        return TuneJob(study, study_name, data, request.strategy_id)

    async def tune(self, tenant: str, job: TuneJob, progress=None) -> pb.TuneModelResponse:
        study = job.study
        lineage = self._lineage(tenant, job.data, job.strategy_id, "tuning")
        async with self._tuner.open(study) as opened:
            parent = (await asyncio.to_thread(lambda: opened.user_attrs)).get(MLFLOW_RUN)
            if parent is None:
                parent = await self._mlflow.start_parent(
                    f"tune-{job.study_name}",
                    lineage,
                    {
                        "plugin_key": study.plugin_key,
                        "n_trials": study.n_trials,
                        "metric": study.metric,
                        "direction": study.direction,
                        "seed": study.seed,
                        **{f"fixed.{k}": v for k, v in study.fixed.items()},
                    },
                    {"study_name": job.study_name},
                )
                await asyncio.to_thread(opened.set_user_attr, MLFLOW_RUN, parent)
            trial_lineage = replace(lineage, run_type="tuning_trial")

            async def on_trial(trial: tuning.TrialView) -> None:
                await self._mlflow.log_child(
                    parent,
                    f"{job.study_name}-trial-{trial.number}",
                    trial_lineage,
                    trial.params,
                    trial.metrics or ({} if trial.value is None else {study.metric: trial.value}),
                    {
                        "study_name": job.study_name,
                        "trial_number": str(trial.number),
                        "trial_state": trial.state,
                        "ray_node_id": trial.node_id,
                    },
                    "FINISHED" if trial.state in ("COMPLETE", "PRUNED") else "FAILED",
                    (trial.started_at, trial.finished_at),
                )

            async def trial_done(done: int, total: int, best: tuning.TrialView | None) -> None:
                if progress is not None:
                    tail = "" if best is None else f"; best {study.metric} {best.value:.6g}"
                    await progress(done, total, f"{done}/{total} trials finished{tail}")

            try:
                result = await self._tuner.drive(
                    opened, study, job.data.shared(), on_trial=on_trial, progress=trial_done
                )
            except asyncio.CancelledError:
                await asyncio.shield(self._end_parent(parent, "KILLED"))
                raise
            except Exception:
                await self._end_parent(parent, "FAILED")
                raise
        best = result.best
        if best is None:
            await self._mlflow.finish_parent(parent, {}, {}, "FAILED")
            errors = [t.error for t in result.trials if t.error and t.state == "FAIL"]
            raise FailedPrecondition(
                f"no trial of study {job.study_name!r} completed"
                + (f"; first failure: {errors[0]}" if errors else ""),
                reason="NO_TRIAL_COMPLETED",
            )
        await self._mlflow.finish_parent(
            parent,
            {"best_value": best.value, "n_trials_completed": float(result.n_finished)},
            {"best_trial": str(best.number), "best_params": json.dumps(best.params)},
            "FINISHED",
        )
        best_params = get_plugin(study.plugin_key).check_params(best.params)
        experiment_id = await self._record_experiment(
            tenant,
            job.data,
            job.strategy_id,
            parent,
            {"plugin_key": study.plugin_key, **best_params},
            best.metrics,
            {"run_type": "tuning", "study_name": job.study_name, "best_trial": str(best.number)},
        )
        if progress is not None:
            await progress(result.n_finished, study.n_trials, "done")
        return pb.TuneModelResponse(
            best_params=struct(best_params),
            best_value=best.value,
            n_trials_completed=result.n_finished,
            trials=[_trial_proto(t) for t in result.trials],
            study_name=job.study_name,
            mlflow_run_id=parent,
            experiment_id=experiment_id,
            plugin_key=study.plugin_key,
            metric=study.metric,
            direction=study.direction,
            best_trial=best.number,
            best_metrics=struct(best.metrics),
        )

    async def tune_async(self, tenant: str, job: TuneJob, request: dict[str, Any]) -> Task:
        async def work(progress) -> dict[str, Any]:
            await progress(0, job.study.n_trials, "starting")
            return _message_dict(await self.tune(tenant, job, progress))

        return await self.tasks.submit(tenant, "tune", request, work)

    # --- AutoML --------------------------------------------------------------------------

    async def prepare_automl(
        self, tenant: str, request: pb.RunAutoMLRequest, candidates: dict[str, dict[str, Any]]
    ) -> AutoMLJob:
        if not candidates:
            candidates = {p.key: {} for p in plugins() if p.family == "machine_learning"}
        if len(candidates) > MAX_CANDIDATES:
            raise InvalidArgument(
                f"at most {MAX_CANDIDATES} candidates", reason="TOO_MANY_CANDIDATES"
            )
        checked: dict[str, dict[str, Any]] = {}
        for name, params in candidates.items():
            plugin = get_plugin(name)
            if plugin.key in checked:
                raise InvalidArgument(
                    f"candidates name {plugin.key} twice", reason="DUPLICATE_CANDIDATE"
                )
            checked[plugin.key] = plugin.check_params(params)
            if request.tune_trials:
                # Tuning searches what the candidate leaves unset: keep only its own values.
                checked[plugin.key] = {k: checked[plugin.key][k] for k in params}
        if not 0 <= request.tune_trials <= MAX_AUTOML_TRIALS:
            raise InvalidArgument(
                f"tune_trials must be 0..{MAX_AUTOML_TRIALS}", reason="INVALID_N_TRIALS"
            )
        if request.ensemble_top_k < 0 or request.ensemble_top_k == 1:
            raise InvalidArgument(
                "ensemble_top_k must be 0 (no ensemble) or at least 2",
                reason="INVALID_ENSEMBLE_TOP_K",
            )
        metric = tuning.resolve_metric(request.metric)
        return AutoMLJob(
            candidates=checked,
            metric=metric,
            direction=tuning.natural_direction(metric),
            seed=check_seed(request.seed) if request.HasField("seed") else 0,
            tune_trials=request.tune_trials,
            ensemble_top_k=request.ensemble_top_k,
            max_parallel=_max_parallel(request.max_parallel),
            data=await self._training_data(tenant, request.dataset, request.cv),
            strategy_id=request.strategy_id,
        )

    async def automl(self, tenant: str, job: AutoMLJob, progress=None) -> pb.RunAutoMLResponse:
        lineage = self._lineage(tenant, job.data, job.strategy_id, "automl")
        parent = await self._mlflow.start_parent(
            f"automl-{uuid.uuid4().hex[:8]}",
            lineage,
            {
                "metric": job.metric,
                "direction": job.direction,
                "seed": job.seed,
                "tune_trials": job.tune_trials,
                "ensemble_top_k": job.ensemble_top_k,
                "candidates": ",".join(job.candidates),
            },
            {},
        )
        try:
            board = await AutoML(
                job.data.shared(), job.metric, job.direction, job.seed, job.max_parallel
            ).run(job.candidates, job.tune_trials, job.ensemble_top_k, progress)
        except asyncio.CancelledError:
            await asyncio.shield(self._end_parent(parent, "KILLED"))
            raise
        except Exception:
            await self._end_parent(parent, "FAILED")
            raise
        child = replace(lineage, run_type="automl_candidate")
        run_ids = []
        for row in board.rows:
            run_ids.append(
                await self._mlflow.log_child(
                    parent,
                    f"{row.plugin_key}-rank-{row.rank}" if row.rank else f"{row.plugin_key}-failed",
                    child,
                    {"plugin_key": row.plugin_key, **row.params},
                    row.metrics or {},
                    {"rank": str(row.rank), "status": row.status, "error": row.error[:5000]},
                    "FINISHED" if row.status == "SUCCEEDED" else "FAILED",
                )
            )
        winner = board.rows[0] if board.rows and board.rows[0].rank == 1 else None
        experiment_id = ""
        if winner is not None:
            await self._mlflow.finish_parent(
                parent,
                {f"best_{job.metric}": winner.score},
                {"best_plugin": winner.plugin_key},
                "FINISHED",
            )
            experiment_id = await self._record_experiment(
                tenant,
                job.data,
                job.strategy_id,
                parent,
                {"plugin_key": winner.plugin_key, **winner.params},
                winner.metrics or {},
                {"run_type": "automl", "rank": "1"},
            )
        else:
            await self._mlflow.finish_parent(parent, {}, {}, "FAILED")
        return pb.RunAutoMLResponse(
            leaderboard=[
                pb.LeaderboardEntry(
                    rank=row.rank,
                    plugin_key=row.plugin_key,
                    params=struct(row.params),
                    score=row.score,
                    metrics=struct(row.metrics or {}),
                    fit_time_s=row.fit_time_s,
                    status=row.status,
                    error=row.error,
                    mlflow_run_id=run_id,
                    n_trials=row.n_trials,
                )
                for row, run_id in zip(board.rows, run_ids, strict=True)
            ],
            metric=board.metric,
            direction=board.direction,
            mlflow_run_id=parent,
            experiment_id=experiment_id,
        )

    async def automl_async(self, tenant: str, job: AutoMLJob, request: dict[str, Any]) -> Task:
        async def work(progress) -> dict[str, Any]:
            return _message_dict(await self.automl(tenant, job, progress))

        return await self.tasks.submit(tenant, "automl", request, work)

    async def _end_parent(self, run_id: str, status: str) -> None:
        """Best effort, on the way out of a failed or cancelled study or leaderboard: the error
        that stopped it is the one to report, not MLflow's."""
        with contextlib.suppress(DomainError):
            await self._mlflow.finish_parent(run_id, {}, {}, status)

    async def _record_experiment(
        self,
        tenant: str,
        data: TrainingData,
        strategy_id: str,
        mlflow_run_id: str,
        parameters: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        **fields: Any,
    ) -> str:
        """An Experiment row for a training, a study's best trial or a leaderboard's winner,
        with the lineage every one of them carries."""
        return await self._experiments.record(
            tenant,
            {
                "strategy_id": strategy_id,
                "dataset_version": data.dataset_version,
                "feature_version": data.feature_version,
                "git_commit": self._git_commit,
                "mlflow_run_id": mlflow_run_id,
                "parameters": parameters,
                "metrics": metrics,
                "tags": {**tags, "bars_id": data.bars.id},
                **fields,
            },
        )

    def _lineage(self, tenant: str, data: TrainingData, strategy_id: str, run_type: str) -> Lineage:
        return Lineage(
            tenant=tenant,
            strategy_id=strategy_id,
            git_commit=self._git_commit,
            dataset_version=data.dataset_version,
            feature_version=data.feature_version,
            bars_id=data.bars.id,
            run_type=run_type,
        )

    # --- tasks ---------------------------------------------------------------------------

    async def get_task(self, tenant: str, task_id: str) -> Task:
        task = await self._store.get_task(task_id) if is_uuid(task_id) else None
        check_owned(task, tenant, "task", task_id)
        return task

    async def list_tasks(self, tenant, filters, skip=0, limit=0, page_token="") -> Page:
        offset, limit = page_window(limit, skip, page_token)
        items, total = await self._store.list_tasks(tenant, filters, offset, limit)
        return page(items, offset, total)

    async def cancel_task(self, tenant: str, task_id: str) -> Task:
        await self.tasks.cancel(await self.get_task(tenant, task_id))
        return await self.get_task(tenant, task_id)


def _max_parallel(value: int) -> int:
    if not 0 <= value <= MAX_PARALLEL:
        raise InvalidArgument(
            f"max_parallel must be 0 (the cluster's CPUs) to {MAX_PARALLEL}",
            reason="INVALID_MAX_PARALLEL",
        )
    return value


def _message_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _trial_proto(trial: tuning.TrialView) -> pb.TuneTrial:
    message = pb.TuneTrial(
        number=trial.number,
        params=struct(trial.params),
        value=trial.value,
        state=trial.state,
        duration_s=trial.duration_s,
        node_id=trial.node_id,
        metrics=struct(trial.metrics),
        error=trial.error,
    )
    for name in ("started_at", "finished_at"):
        moment = getattr(trial, name)
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(int(moment * 1000)))
    return message


def _cv_config(message: pb.CVConfig) -> CVConfig:
    defaults = CVConfig()
    return CVConfig(
        method=message.method or defaults.method,
        n_splits=message.n_splits or defaults.n_splits,
        test_size=message.test_size or defaults.test_size,
        min_train_size=message.min_train_size or defaults.min_train_size,
        gap=message.gap if message.HasField("gap") else None,
        embargo_pct=message.embargo_pct,
        n_test_splits=message.n_test_splits or defaults.n_test_splits,
    )


def _json_number(value: float) -> float | None:
    return None if pd.isna(value) else float(value)
