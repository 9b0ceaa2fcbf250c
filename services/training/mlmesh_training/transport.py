"""gRPC servicer for mlmesh.training.v1.TrainingService: requests converted to plain values
(DatasetSpec, CVConfig, job specs), the catalog, jobs and tasks called, and every response
built from their results. REST statuses are declared in the protos (mlmesh_common.http)."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2, json_format, struct_pb2

from mlmesh.training.v1 import task_pb2, training_service_pb2_grpc
from mlmesh.training.v1 import training_service_pb2 as pb
from mlmesh_common.errors import FailedPrecondition
from mlmesh_common.http import answer_instead
from mlmesh_common.tenancy import tenant_of
from mlmesh_common.text import check_no_nul
from mlmesh_common.values import struct, timestamp
from mlmesh_training import datasets as ds
from mlmesh_training.backtest import BacktestResult, BacktestSpec
from mlmesh_training.catalog import DatasetSpec
from mlmesh_training.cv import CVConfig
from mlmesh_training.entities import Task
from mlmesh_training.jobs import (
    AutoMLResult,
    AutoMLSpec,
    TrainResult,
    TrainSpec,
    TuneResult,
    TuneSpec,
)
from mlmesh_training.plugins import plugins
from mlmesh_training.selection import Selection
from mlmesh_training.service import TrainingService
from mlmesh_training.tasks import Resume, Work
from mlmesh_training.tuning import TrialView


def _param_spec(spec) -> pb.ParamSpec:
    data = spec.to_dict()
    message = pb.ParamSpec(type=data["type"], log=bool(data.get("log", False)))
    for name in ("low", "high", "step"):
        if data.get(name) is not None:
            setattr(message, name, float(data[name]))
    for choice in data.get("choices") or ():
        value = struct_pb2.Value()
        value.MergeFrom(json_format.ParseDict(choice, struct_pb2.Value()))
        message.choices.append(value)
    return message


def _space(request: pb.TuneModelRequest) -> dict[str, dict]:
    """The request's param_space as ParamSpec dicts; unset optional fields stay absent."""
    space = {}
    for name, spec in request.param_space.items():
        data: dict = {"type": spec.type}
        for field in ("low", "high", "step"):
            if spec.HasField(field):
                data[field] = getattr(spec, field)
        if spec.log:
            data["log"] = True
        if spec.choices:
            data["choices"] = [json_format.MessageToDict(choice) for choice in spec.choices]
        space[name] = data
    return space


def _request_dict(request) -> dict:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


def _message_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# --- requests to plain values --------------------------------------------------------------------


def _dataset_spec(message: pb.DatasetSpec) -> DatasetSpec:
    """Proto3 zero values mean the documented defaults."""
    defaults = DatasetSpec()
    return DatasetSpec(
        feature_ids=list(message.feature_ids),
        symbol=message.symbol,
        timeframe=message.timeframe or defaults.timeframe,
        start_date=message.start_date,
        end_date=message.end_date,
        target_horizon=message.target_horizon or defaults.target_horizon,
        bars_id=message.bars_id,
    )


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


def _optional(message, name: str):
    return getattr(message, name) if message.HasField(name) else None


def _backtest_spec(request) -> BacktestSpec:
    """The request's backtest section; `given` says whether it had one."""
    message = request.backtest
    return BacktestSpec(
        position=message.position,
        cost_bps=message.cost_bps,
        periods_per_year=_optional(message, "periods_per_year"),
        given=request.HasField("backtest"),
    )


def _check_text(request) -> None:
    """A NUL character anywhere in the request is a 400 before any work: MLflow and PostgreSQL,
    where its text ends up, cannot hold one (MLflow answers 500, after the training ran)."""
    check_no_nul(_request_dict(request), "request")


def _train_spec(request: pb.TrainModelRequest) -> TrainSpec:
    _check_text(request)
    return TrainSpec(
        model_id=request.model_id,
        dataset=_dataset_spec(request.dataset),
        cv=_cv_config(request.cv),
        strategy_id=request.strategy_id,
        seed=_optional(request, "seed"),
        backtest=_backtest_spec(request),
    )


def _tune_spec(request: pb.TuneModelRequest) -> TuneSpec:
    _check_text(request)
    return TuneSpec(
        plugin_key=request.plugin_key,
        dataset=_dataset_spec(request.dataset),
        cv=_cv_config(request.cv),
        param_space=_space(request),
        fixed_params=json_format.MessageToDict(request.fixed_params),
        n_trials=request.n_trials,
        metric=request.metric,
        direction=request.direction,
        timeout_s=_optional(request, "timeout_s"),
        seed=_optional(request, "seed"),
        max_parallel=request.max_parallel,
        pruning=request.pruning,
        study_name=request.study_name,
        strategy_id=request.strategy_id,
        backtest=_backtest_spec(request),
        rank_by=request.rank_by,
    )


def _automl_spec(request: pb.RunAutoMLRequest) -> AutoMLSpec:
    _check_text(request)
    return AutoMLSpec(
        dataset=_dataset_spec(request.dataset),
        cv=_cv_config(request.cv),
        candidates={
            key: json_format.MessageToDict(params) for key, params in request.candidates.items()
        },
        metric=request.metric,
        seed=_optional(request, "seed"),
        tune_trials=request.tune_trials,
        ensemble_top_k=request.ensemble_top_k,
        max_parallel=request.max_parallel,
        strategy_id=request.strategy_id,
        backtest=_backtest_spec(request),
        rank_by=request.rank_by,
    )


# --- results to responses ------------------------------------------------------------------------


def _stats(stats) -> pb.BacktestStats:
    return pb.BacktestStats(
        sharpe=stats.sharpe,
        sortino=stats.sortino,
        max_drawdown=stats.max_drawdown,
        calmar=stats.calmar,
        total_return=stats.total_return,
        hit_rate=stats.hit_rate,
        turnover=stats.turnover,
        n_bars=stats.n_bars,
    )


def _backtest(result: BacktestResult) -> pb.Backtest:
    config = result.config
    message = pb.Backtest(
        position=config.position,
        cost_bps=config.cost_bps,
        periods_per_year=config.periods_per_year,
        folds=[pb.FoldBacktest(fold=fold, stats=_stats(stats)) for fold, stats in result.folds],
        stitched=_stats(result.stitched),
        psr=result.psr,
    )
    if result.cpcv is not None:
        d = result.cpcv.distribution
        message.cpcv.CopyFrom(
            pb.CPCVPaths(
                n_paths=len(result.cpcv.sharpes),
                sharpes=result.cpcv.sharpes,
                sharpe_distribution=pb.PathDistribution(
                    mean=d.mean, std=d.std, min=d.min, q05=d.q05, q50=d.q50, q95=d.q95
                ),
            )
        )
    return message


def _train_response(result: TrainResult) -> pb.TrainModelResponse:
    return pb.TrainModelResponse(
        model_id=result.model_id,
        artifact_uri=result.artifact_uri,
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
                for f in result.cv.folds
            ],
            n_folds=len(result.cv.folds),
            **result.cv.summary,
        ),
        n_train_rows=result.n_train_rows,
        feature_columns=result.feature_columns,
        mlflow_run_id=result.mlflow_run_id,
        experiment_id=result.experiment_id,
        model_version=result.model_version,
        bars_id=result.bars.id,
        bars_version_hash=result.bars.version_hash,
        backtest=None if result.backtest is None else _backtest(result.backtest),
        registry_run_id=result.registry_run_id,
    )


def _pbo(selection: Selection) -> pb.PBO:
    defined = {**selection.pbo.proto_fields(), "sr0": selection.sr0} if selection.ok else {}
    return pb.PBO(
        n_blocks=selection.n_blocks,
        n_observations=selection.n_observations,
        n_trials=selection.n_trials,
        unavailable_reason=selection.reason,
        unavailable_message=selection.message,
        **defined,
    )


def _best_fields(selection: Selection | None, key, sharpe, psr) -> dict[str, Any]:
    """A response's pbo and best_* fields; the best row's own Sharpe and PSR even when the
    PBO is undefined."""
    if selection is None:
        return {}
    return {
        "pbo": _pbo(selection),
        "best_sharpe": sharpe,
        "best_psr": psr,
        "best_dsr": selection.dsr.get(key),
    }


def _trial_proto(trial: TrialView, selection: Selection | None = None) -> pb.TuneTrial:
    message = pb.TuneTrial(
        number=trial.number,
        params=struct(trial.params),
        value=trial.value,
        state=trial.state,
        duration_s=trial.duration_s,
        node_id=trial.node_id,
        metrics=struct(trial.metrics),
        error=trial.error,
        oos_sharpe=trial.oos_sharpe,
        oos_psr=trial.oos_psr,
        dsr=None if selection is None else selection.dsr.get(trial.number),
    )
    for name in ("started_at", "finished_at"):
        moment = getattr(trial, name)
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(int(moment * 1000)))
    return message


def _tune_response(result: TuneResult) -> pb.TuneModelResponse:
    return pb.TuneModelResponse(
        best_params=struct(result.best_params),
        best_value=result.best_value,
        n_trials_completed=result.n_trials_completed,
        trials=[_trial_proto(t, result.selection) for t in result.trials],
        study_name=result.study_name,
        mlflow_run_id=result.mlflow_run_id,
        experiment_id=result.experiment_id,
        plugin_key=result.plugin_key,
        metric=result.metric,
        direction=result.direction,
        best_trial=result.best_trial,
        best_metrics=struct(result.best_metrics),
        rank_by=result.rank_by,
        **_best_fields(result.selection, result.best_trial, *_trial_oos(result)),
    )


def _trial_oos(result: TuneResult) -> tuple[float | None, float | None]:
    for trial in result.trials:
        if trial.number == result.best_trial:
            return trial.oos_sharpe, trial.oos_psr
    return None, None


def _automl_response(result: AutoMLResult) -> pb.RunAutoMLResponse:
    board = result.board
    winner = board.rows[0] if board.rows and board.rows[0].rank == 1 else None
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
                oos_sharpe=row.oos_sharpe,
                oos_psr=row.oos_psr,
                dsr=None if result.selection is None else result.selection.dsr.get(row.plugin_key),
            )
            for row, run_id in zip(board.rows, result.run_ids, strict=True)
        ],
        metric=board.metric,
        direction=board.direction,
        mlflow_run_id=result.mlflow_run_id,
        experiment_id=result.experiment_id,
        rank_by=result.rank_by,
        **_best_fields(
            result.selection,
            winner.plugin_key if winner else None,
            winner.oos_sharpe if winner else None,
            winner.oos_psr if winner else None,
        ),
    )


def task_resumer(service: TrainingService) -> Resume:
    """Rebuilds a task's work from its stored request, checked again as when it was submitted
    (a model or dataset deleted since fails it with the same error a new request would get)."""
    jobs = service.jobs
    kinds = {
        "train": (pb.TrainModelRequest, _train_spec, jobs.prepare_train, _train_response),
        "tune": (pb.TuneModelRequest, _tune_spec, jobs.prepare_tune, _tune_response),
        "automl": (pb.RunAutoMLRequest, _automl_spec, jobs.prepare_automl, _automl_response),
    }

    async def resume(task: Task) -> Work:
        if task.kind not in kinds:
            raise FailedPrecondition(f"unknown task kind {task.kind!r}", reason="UNKNOWN_TASK")
        message, to_spec, prepare, respond = kinds[task.kind]
        request = json_format.ParseDict(task.request, message())
        job = await prepare(task.tenant, to_spec(request))
        return jobs.work(
            task.tenant, job, lambda result: _message_dict(respond(result)), task.id, resumed=True
        )

    return resume


class TrainingServicer(training_service_pb2_grpc.TrainingServiceServicer):
    def __init__(self, service: TrainingService) -> None:
        self._catalog = service.catalog
        self._jobs = service.jobs
        self._tasks = service.tasks

    async def _submit(self, context, job, request, respond) -> task_pb2.Task:
        """The job as a background task whose result is its response's JSON."""
        task = await self._jobs.submit(
            tenant_of(context),
            job,
            _request_dict(request),
            lambda result: _message_dict(respond(result)),
        )
        return task.to_proto()

    # --- models --------------------------------------------------------------------------

    async def CreateModel(self, request, context):
        m = request.model
        model = await self._catalog.create_model(
            tenant_of(context),
            m.name,
            m.model_type,
            m.family,
            json_format.MessageToDict(m.parameters),
        )
        return model.to_proto()

    async def ListModels(self, request, context):
        page = await self._catalog.list_models(
            tenant_of(context), request.family, request.skip, request.limit, request.page_token
        )
        return pb.ListModelsResponse(
            models=[m.to_proto() for m in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def GetModel(self, request, context):
        return (await self._catalog.get_model(tenant_of(context), request.model_id)).to_proto()

    async def UpdateModel(self, request, context):
        m = request.model
        model = await self._catalog.update_model(
            tenant_of(context),
            request.model_id,
            name=m.name,
            parameters=json_format.MessageToDict(m.parameters)
            if m.HasField("parameters")
            else None,
            version=m.version,
        )
        return model.to_proto()

    async def DeleteModel(self, request, context):
        await self._catalog.delete_model(tenant_of(context), request.model_id)
        return empty_pb2.Empty()

    # --- training, tuning and AutoML ------------------------------------------------------

    async def TrainModel(self, request, context):
        tenant = tenant_of(context)
        job = await self._jobs.prepare_train(tenant, _train_spec(request))
        return _train_response(await self._jobs.train(tenant, job))

    async def TrainModelAsync(self, request, context):
        job = await self._jobs.prepare_train(tenant_of(context), _train_spec(request.request))
        return await self._submit(context, job, request.request, _train_response)

    async def TuneModel(self, request, context):
        tenant = tenant_of(context)
        job = await self._jobs.prepare_tune(tenant, _tune_spec(request))
        return _tune_response(await self._jobs.tune(tenant, job))

    async def TuneModelAsync(self, request, context):
        job = await self._jobs.prepare_tune(tenant_of(context), _tune_spec(request.request))
        # Stored with the study's name, generated or given, so that a replica taking the task
        # over resumes that study.
        stored = pb.TuneModelRequest()
        stored.CopyFrom(request.request)
        stored.study_name = job.study_name
        return await self._submit(context, job, stored, _tune_response)

    async def RunAutoML(self, request, context):
        tenant = tenant_of(context)
        job = await self._jobs.prepare_automl(tenant, _automl_spec(request))
        return _automl_response(await self._jobs.automl(tenant, job))

    async def RunAutoMLAsync(self, request, context):
        job = await self._jobs.prepare_automl(tenant_of(context), _automl_spec(request.request))
        return await self._submit(context, job, request.request, _automl_response)

    async def ListPlugins(self, request, context):
        return pb.ListPluginsResponse(
            plugins=[
                pb.Plugin(
                    key=p.key,
                    family=str(p.family),
                    model_type=p.model_type,
                    description=p.description,
                    default_params=struct(p.default_params()),
                )
                for p in plugins()
            ]
        )

    async def ListSearchSpaces(self, request, context):
        return pb.ListSearchSpacesResponse(
            search_spaces={
                p.key: pb.SearchSpace(
                    params={name: _param_spec(spec) for name, spec in p.search_space().items()}
                )
                for p in plugins()
            }
        )

    # --- datasets ------------------------------------------------------------------------

    async def CreateDataset(self, request, context):
        dataset, created = await self._catalog.create_dataset(
            tenant_of(context),
            name=request.name,
            kind=request.kind,
            symbol=request.symbol,
            timeframe=request.timeframe,
            content_type=request.upload.content_type,
            body=request.upload.data,
        )
        if not created:  # an identical re-upload answers its existing dataset with 200
            answer_instead(200)
        return dataset.to_proto()

    async def ListDatasets(self, request, context):
        filters = {"symbol": request.symbol, "timeframe": request.timeframe, "kind": request.kind}
        page = await self._catalog.list_datasets(
            tenant_of(context), filters, request.skip, request.limit, request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[d.to_proto() for d in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def GetDataset(self, request, context):
        dataset = await self._catalog.get_dataset(tenant_of(context), request.dataset_id)
        return dataset.to_proto()

    async def PreviewDataset(self, request, context):
        columns, rows = await self._catalog.preview_dataset(
            tenant_of(context), request.dataset_id, request.rows
        )
        return pb.PreviewDatasetResponse(
            dataset_id=request.dataset_id, columns=columns, rows=[struct(r) for r in rows]
        )

    async def DeleteDataset(self, request, context):
        await self._catalog.delete_dataset(tenant_of(context), request.dataset_id)
        return empty_pb2.Empty()

    # --- tasks ---------------------------------------------------------------------------

    async def GetTask(self, request, context):
        return (await self._tasks.get(tenant_of(context), request.task_id)).to_proto()

    async def ListTasks(self, request, context):
        status = "" if not request.status else task_pb2.Task.Status.Name(request.status)
        page = await self._tasks.list(
            tenant_of(context),
            {"status": status, "kind": request.kind},
            request.skip,
            request.limit,
            request.page_token,
        )
        return pb.ListTasksResponse(
            tasks=[t.to_proto() for t in page.items],
            total=page.total,
            next_page_token=page.next_page_token,
        )

    async def CancelTask(self, request, context):
        return (await self._tasks.cancel(tenant_of(context), request.task_id)).to_proto()
