"""The training service's use cases: models, datasets, cross-validated training with its
lineage, and background tasks; tenancy and validation rules over the stores."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from google.protobuf import json_format

from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh_common.artifacts import ArtifactStore, parse_upload
from mlmesh_common.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from mlmesh_common.resources import Page, check_owned, is_uuid, page, page_window
from mlmesh_training import datasets as ds
from mlmesh_training import engine
from mlmesh_training.cv import CVConfig, split
from mlmesh_training.entities import Dataset, Model, Task, timestamp
from mlmesh_training.lineage import ExperimentsRecorder, Lineage, MlflowRecorder
from mlmesh_training.plugins import get_plugin, plugins
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.tasks import TaskRunner

MAX_PREVIEW_ROWS = 1000
FAMILIES = ("statistical", "machine_learning", "deep_learning", "ensemble")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class TrainJob:
    """A validated training request: everything checked before any work starts."""

    model: Model
    plugin_key: str
    params: dict[str, Any]
    seed: int
    X: pd.DataFrame
    y: pd.Series
    feature_columns: list[str]
    folds: list
    strategy_id: str
    dataset_version: str
    feature_version: str


class TrainingService:
    def __init__(
        self,
        store: TrainingStore,
        artifacts: ArtifactStore,
        mlflow: MlflowRecorder,
        experiments: ExperimentsRecorder,
        git_commit: str,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._mlflow = mlflow
        self._experiments = experiments
        self._git_commit = git_commit
        self._clock = clock
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
    ) -> Dataset:
        if not symbol or len(symbol) > 64:
            raise InvalidArgument("symbol must be 1..64 characters", reason="INVALID_SYMBOL")
        timeframe = timeframe or "1d"
        # Multipart with a `file` part, or the raw body (artifact_path names the table).
        _, data = parse_upload(content_type, body, "upload")
        frame = ds.parse_table(data, kind)
        version_hash = hashlib.sha256(data).hexdigest()
        dataset_id = str(uuid.uuid4())
        stored = await self._artifacts.put(
            tenant, "datasets", dataset_id, "data.parquet", ds.to_parquet(frame)
        )
        dataset = Dataset(
            id=dataset_id,
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
        data = await self._artifacts.get(dataset.tenant, "datasets", dataset.id, "data.parquet")
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
        spec = request.dataset
        horizon = spec.target_horizon or 1
        start = ds.parse_date(spec.start_date, "start_date")
        end = ds.parse_date(spec.end_date, "end_date")
        if start is not None and end is not None and start >= end:
            raise InvalidArgument("start_date must be before end_date", reason="INVALID_DATES")
        features = await self._feature_datasets(tenant, list(spec.feature_ids))
        timeframe = spec.timeframe or "1d"
        bars = await self._store.find_bars(tenant, spec.symbol, timeframe)
        if bars is None:
            raise NotFound(
                f"no bars dataset for symbol {spec.symbol!r} and timeframe {timeframe}",
                reason="BARS_NOT_FOUND",
                metadata={"symbol": spec.symbol, "timeframe": timeframe},
            )
        close = (await self._frame(bars))["close"]
        frames = [(d.name or d.id[:8], await self._frame(d)) for d in features]
        assembled = ds.assemble(close, frames, target_horizon=horizon, start=start, end=end)
        cv = _cv_config(request.cv)
        cv.validate(len(assembled.X), horizon)
        folds = split(len(assembled.X), cv, horizon)
        feature_hashes = "".join(sorted(d.version_hash for d in features))
        return TrainJob(
            model=model,
            plugin_key=model.plugin_key,
            params=get_plugin(model.plugin_key).check_params(model.parameters),
            seed=request.seed if request.HasField("seed") else 0,
            X=assembled.X,
            y=assembled.y,
            feature_columns=assembled.feature_columns,
            folds=folds,
            strategy_id=request.strategy_id,
            dataset_version=bars.version_hash[:16],
            feature_version=hashlib.sha256(feature_hashes.encode()).hexdigest()[:16],
        )

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
        total = len(job.folds) + 1

        async def fold_done(done: int, _folds: int) -> None:
            if progress is not None:
                await progress(done, total, f"{done}/{len(job.folds)} folds fitted")

        result = await engine.cross_validate(
            job.plugin_key, job.params, job.seed, job.X, job.y, job.folds, fold_done
        )
        blob = await engine.fit_full(job.plugin_key, job.params, job.seed, job.X, job.y)
        model = job.model
        version = model.version + 1
        stored = await self._artifacts.put(
            tenant, "models", model.id, f"v{version}/model.bin", blob
        )
        summary = result.summary
        lineage = Lineage(
            tenant=tenant,
            strategy_id=job.strategy_id,
            git_commit=self._git_commit,
            dataset_version=job.dataset_version,
            feature_version=job.feature_version,
            model_version=str(version),
        )
        run_id = await self._mlflow.record(
            f"{model.name}-v{version}",
            lineage,
            {"plugin_key": job.plugin_key, "seed": job.seed, **job.params},
            result,
        )
        experiment_id = await self._experiments.record(
            tenant,
            {
                "strategy_id": job.strategy_id,
                "dataset_version": job.dataset_version,
                "feature_version": job.feature_version,
                "model_version": str(version),
                "git_commit": self._git_commit,
                "mlflow_run_id": run_id,
                "parameters": {"plugin_key": job.plugin_key, "seed": job.seed, **job.params},
                "metrics": summary,
                "artifacts": {"model": stored.uri},
                "tags": {"model_id": model.id, "run_type": "training"},
            },
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
                    )
                    for f in result.folds
                ],
                n_folds=len(result.folds),
                **summary,
            ),
            n_train_rows=len(job.X),
            feature_columns=job.feature_columns,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            model_version=version,
        )

    async def train_async(self, tenant: str, job: TrainJob, request: dict[str, Any]) -> Task:
        async def work(progress) -> dict[str, Any]:
            response = await self.train(tenant, job, progress)
            return json_format.MessageToDict(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )

        return await self.tasks.submit(tenant, "train", request, work)

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
