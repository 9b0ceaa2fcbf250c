"""Train, tune and AutoML: each request (plain values) checked into a job before any work
starts, the job run on Ray with its lineage recorded, and its outcome assembled into a domain
result (TrainResult, TuneResult, AutoMLResult); `submit` runs any job as a background task."""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mlmesh_common.artifacts import ArtifactStore
from mlmesh_common.errors import Conflict, FailedPrecondition, InvalidArgument
from mlmesh_training import backtest, engine, tuning
from mlmesh_training.automl import AutoML, Leaderboard, rank_by_score
from mlmesh_training.backtest import BacktestConfig, BacktestResult, BacktestSpec
from mlmesh_training.catalog import Catalog, DatasetSpec, TrainingData
from mlmesh_training.cv import CVConfig
from mlmesh_training.engine import CVResult
from mlmesh_training.entities import Dataset, Model, Task
from mlmesh_training.lineage import (
    TASK_TAG,
    ExperimentsRecorder,
    Lineage,
    MlflowRecorder,
    parent_run,
    series_metrics,
)
from mlmesh_training.plugins import get_plugin, plugins
from mlmesh_training.plugins.base import check_seed
from mlmesh_training.selection import RANK_BY, Selection, select
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.tasks import Progress, TaskRunner, Work
from mlmesh_training.tuning import StudySpec, TrialView, Tuner

DEFAULT_TRIALS = 30
MAX_PARALLEL = 1024
MAX_CANDIDATES = 20
MAX_AUTOML_TRIALS = 200
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The study's user attribute naming its MLflow parent run.
MLFLOW_RUN = "mlmesh.mlflow_run_id"


# --- what a request asks for ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSpec:
    model_id: str
    dataset: DatasetSpec
    cv: CVConfig
    strategy_id: str = ""
    seed: int | None = None
    backtest: BacktestSpec = field(default_factory=BacktestSpec)


@dataclass(frozen=True)
class TuneSpec:
    """A tuning request; zero values (n_trials, metric, direction, study_name) mean the
    defaults the API documents."""

    plugin_key: str
    dataset: DatasetSpec
    cv: CVConfig
    param_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    fixed_params: dict[str, Any] = field(default_factory=dict)
    n_trials: int = 0
    metric: str = ""
    direction: str = ""
    timeout_s: float | None = None
    seed: int | None = None
    max_parallel: int = 0
    pruning: bool = False
    study_name: str = ""
    strategy_id: str = ""
    backtest: BacktestSpec = field(default_factory=BacktestSpec)
    rank_by: str = ""  # metric (default) or dsr


@dataclass(frozen=True)
class AutoMLSpec:
    """An AutoML request; no candidates means every machine-learning plugin with defaults."""

    dataset: DatasetSpec
    cv: CVConfig
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = ""
    seed: int | None = None
    tune_trials: int = 0
    ensemble_top_k: int = 0
    max_parallel: int = 0
    strategy_id: str = ""
    backtest: BacktestSpec = field(default_factory=BacktestSpec)
    rank_by: str = ""


# --- validated jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainJob:
    """A validated training request: everything checked before any work starts."""

    model: Model
    plugin_key: str
    params: dict[str, Any]
    seed: int
    data: TrainingData
    strategy_id: str
    cv: CVConfig
    backtest: BacktestConfig | None  # None: no backtest (see backtest.resolve)
    kind = "train"


@dataclass(frozen=True)
class TuneJob:
    """A validated tuning request."""

    study: StudySpec
    study_name: str  # as the tenant named it
    data: TrainingData
    strategy_id: str
    cv: CVConfig
    backtest: BacktestConfig | None
    rank_by: str
    kind = "tune"


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
    cv: CVConfig
    backtest: BacktestConfig | None
    rank_by: str
    kind = "automl"


Job = TrainJob | TuneJob | AutoMLJob


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    model_id: str
    artifact_uri: str
    cv: CVResult
    n_train_rows: int
    feature_columns: list[str]
    mlflow_run_id: str
    experiment_id: str
    model_version: int
    bars: Dataset  # the dataset the target came from
    backtest: BacktestResult | None = None
    registry_run_id: str = ""  # the registry run with the oos_return/oos_equity histories


@dataclass(frozen=True)
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    n_trials_completed: int
    trials: list[TrialView]
    study_name: str
    mlflow_run_id: str  # the study's parent run
    experiment_id: str
    plugin_key: str
    metric: str
    direction: str
    best_trial: int
    best_metrics: dict[str, float]
    selection: Selection | None = None  # None: no backtest
    rank_by: str = "metric"


@dataclass(frozen=True)
class AutoMLResult:
    board: Leaderboard
    run_ids: list[str]  # each row's nested MLflow run, in the board's order
    mlflow_run_id: str  # the leaderboard's parent run
    experiment_id: str  # empty when every candidate failed
    selection: Selection | None = None
    rank_by: str = "metric"


Result = TrainResult | TuneResult | AutoMLResult


class Jobs:
    def __init__(
        self,
        store: TrainingStore,
        catalog: Catalog,
        artifacts: ArtifactStore,
        mlflow: MlflowRecorder,
        experiments: ExperimentsRecorder,
        git_commit: str,
        tuner: Tuner,
        tasks: TaskRunner,
        clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._artifacts = artifacts
        self._mlflow = mlflow
        self._experiments = experiments
        self._git_commit = git_commit
        self._tuner = tuner
        self._tasks = tasks
        self._clock = clock

    async def submit(
        self, tenant: str, job: Job, request: dict[str, Any], encode: Callable[[Any], dict]
    ) -> Task:
        """Runs `job` as a background task that stores `request` and, once done, its result
        as `encode` writes it."""
        task_id = str(uuid.uuid4())
        work = self.work(tenant, job, encode, task_id)
        return await self._tasks.submit(tenant, job.kind, request, work, task_id)

    def work(
        self,
        tenant: str,
        job: Job,
        encode: Callable[[Any], dict],
        task_id: str,
        resumed: bool = False,
    ) -> Work:
        """`job` as the work of task `task_id`. Resumed (taken over from another replica), a
        tune first waits for the study lease of a driver that died with that replica to lapse,
        and an AutoML run ends the leaderboard run the interrupted attempt left RUNNING."""

        async def work(progress: Progress) -> dict[str, Any]:
            if isinstance(job, TuneJob):
                return encode(await self.tune(tenant, job, progress, resumed=resumed))
            if isinstance(job, AutoMLJob):
                return encode(await self.automl(tenant, job, progress, task_id, resumed))
            return encode(await self.train(tenant, job, progress))

        return work

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

    # --- training ------------------------------------------------------------------------

    async def prepare_train(self, tenant: str, spec: TrainSpec) -> TrainJob:
        """Every check of a training request (ids, dates, CV config, 422 on too little data),
        shared by the synchronous and asynchronous paths."""
        model = await self._catalog.get_model(tenant, spec.model_id)
        plugin = get_plugin(model.plugin_key)
        params = plugin.check_params(model.parameters)
        seed = check_seed(spec.seed) if spec.seed is not None else 0
        config = backtest.resolve(spec.backtest, spec.dataset.timeframe)
        return TrainJob(
            model=model,
            plugin_key=model.plugin_key,
            params=params,
            # A library-level seed among the parameters wins; the run records the one used.
            seed=plugin.seed_used(params, seed),
            data=await self._catalog.training_data(tenant, spec.dataset, spec.cv),
            strategy_id=spec.strategy_id,
            cv=spec.cv,
            backtest=config,
        )

    async def train(
        self, tenant: str, job: TrainJob, progress: Progress | None = None
    ) -> TrainResult:
        data = job.data
        total = len(data.folds) + 1

        async def fold_done(done: int, _folds: int) -> None:
            if progress is not None:
                await progress(done, total, f"{done}/{len(data.folds)} folds fitted")

        config = job.backtest
        result = await engine.cross_validate(
            job.plugin_key,
            job.params,
            job.seed,
            data.X,
            data.y,
            data.folds,
            fold_done,
            train_scale=config is not None and config.position == "proportional",
        )
        tested = None
        if config is not None:
            tested = await asyncio.to_thread(
                backtest.run,
                config,
                job.cv,
                len(data.X),
                result.predictions,
                data.next_returns,
                data.bar_index,
            )
        blob = await engine.fit_full(job.plugin_key, job.params, job.seed, data.X, data.y)
        model = job.model
        version = model.version + 1
        stored = await self._artifacts.put(
            tenant, "models", model.id, f"v{version}/model.bin", blob
        )
        summary = result.summary | ({} if tested is None else tested.summary())
        lineage = replace(
            self._lineage(tenant, data, job.strategy_id, "training"), model_version=str(version)
        )
        params = {"plugin_key": job.plugin_key, "seed": job.seed, **job.params}
        if config is not None:
            params |= {
                "backtest.position": config.position,
                "backtest.cost_bps": config.cost_bps,
                "backtest.periods_per_year": config.periods_per_year,
            }
        run_name = f"{model.name}-v{version}"
        run_id = await self._mlflow.record(run_name, lineage, params, result, tested)
        experiment_id = await self._experiments.record_result(
            lineage,
            run_id,
            params,
            summary,
            {"model_id": model.id, "run_type": "training"},
            model_version=str(version),
            artifacts={"model": stored.uri},
        )
        registry_run_id = ""
        if tested is not None:
            registry_run_id = await self._experiments.record_series(
                tenant,
                experiment_id,
                run_name,
                {"run_type": "training", "model_id": model.id, "mlflow_run_id": run_id},
                series_metrics(tested),
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
        return TrainResult(
            model_id=model.id,
            artifact_uri=stored.uri,
            cv=result,
            n_train_rows=len(data.X),
            feature_columns=data.feature_columns,
            mlflow_run_id=run_id,
            experiment_id=experiment_id,
            model_version=version,
            bars=data.bars,
            backtest=tested,
            registry_run_id=registry_run_id,
        )

    # --- tuning --------------------------------------------------------------------------

    async def prepare_tune(self, tenant: str, spec: TuneSpec) -> TuneJob:
        """Every check of a tuning request, before any trial runs."""
        if not spec.plugin_key:
            raise InvalidArgument("plugin_key is required", reason="INVALID_PLUGIN")
        plugin = get_plugin(spec.plugin_key)
        checked = plugin.check_params(spec.fixed_params)
        fixed = {name: checked[name] for name in spec.fixed_params}
        space = tuning.check_space(plugin, spec.param_space, fixed)
        if not space:
            raise InvalidArgument(
                f"{plugin.key} has no default search space; give a param_space",
                reason="EMPTY_SEARCH_SPACE",
            )
        n_trials = spec.n_trials or DEFAULT_TRIALS
        if not 1 <= n_trials <= tuning.MAX_TRIALS:
            raise InvalidArgument(
                f"n_trials must be 1..{tuning.MAX_TRIALS}", reason="INVALID_N_TRIALS"
            )
        metric = tuning.resolve_metric(spec.metric)
        direction = tuning.resolve_direction(spec.direction, metric)
        timeout_s = spec.timeout_s
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise InvalidArgument("timeout_s must be a positive number", reason="INVALID_TIMEOUT")
        seed = check_seed(spec.seed) if spec.seed is not None else None
        max_parallel = _max_parallel(spec.max_parallel)
        config = backtest.resolve(spec.backtest, spec.dataset.timeframe)
        rank_by = _rank_by(spec.rank_by, config)
        study_name = spec.study_name or f"tune-{uuid.uuid4().hex[:12]}"
        if not STUDY_NAME.fullmatch(study_name):
            raise InvalidArgument(
                "study_name must be 1..128 letters, digits, '.', '_' or '-', starting with a "
                "letter or digit",
                reason="INVALID_STUDY_NAME",
            )
        data = await self._catalog.training_data(tenant, spec.dataset, spec.cv)
        identity = {
            "plugin_key": plugin.key,
            "param_space": {name: p.to_dict() for name, p in sorted(space.items())},
            "fixed_params": fixed,
            "metric": metric,
            "direction": direction,
            "dataset": asdict(spec.dataset),
            "dataset_version": data.dataset_version,
            "feature_version": data.feature_version,
            "cv": asdict(spec.cv),
            "backtest": None if config is None else asdict(config),
        }
        study = StudySpec(
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
            pruning=spec.pruning,
            identity=identity,
        )
        return TuneJob(study, study_name, data, spec.strategy_id, spec.cv, config, rank_by)

    async def tune(
        self,
        tenant: str,
        job: TuneJob,
        progress: Progress | None = None,
        resumed: bool = False,
    ) -> TuneResult:
        study = job.study
        if progress is not None:
            await progress(0, study.n_trials, "starting")
        lineage = self._lineage(tenant, job.data, job.strategy_id, "tuning")
        wait_s = self._tuner.lease_s if resumed else 0.0
        async with self._tuner.open(study, wait_s=wait_s) as opened:
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

            async def on_trial(trial: TrialView) -> None:
                await self._mlflow.log_child(
                    parent,
                    f"{job.study_name}-trial-{trial.number}",
                    trial_lineage,
                    trial.params,
                    (trial.metrics or ({} if trial.value is None else {study.metric: trial.value}))
                    | _oos(trial.oos_sharpe, trial.oos_psr),
                    {
                        "study_name": job.study_name,
                        "trial_number": str(trial.number),
                        "trial_state": trial.state,
                        "ray_node_id": trial.node_id,
                    },
                    "FINISHED" if trial.state in ("COMPLETE", "PRUNED") else "FAILED",
                    (trial.started_at, trial.finished_at),
                )

            async def trial_done(done: int, total: int, best: TrialView | None) -> None:
                if progress is not None:
                    tail = "" if best is None else f"; best {study.metric} {best.value:.6g}"
                    await progress(done, total, f"{done}/{total} trials finished{tail}")

            async with parent_run(self._mlflow, parent):
                await engine.ensure_ray()
                shared = job.data.shared(job.data.backtester(job.backtest, job.cv))
                result = await self._tuner.drive(
                    opened, study, shared, on_trial=on_trial, progress=trial_done
                )
        best = result.best
        selection = None
        if job.backtest is not None:
            tested = [t for t in result.trials if t.state == "COMPLETE" and t.oos_return]
            selection = await asyncio.to_thread(
                select,
                [t.number for t in tested],
                [t.oos_return for t in tested],
                job.backtest.periods_per_year,
            )
            if job.rank_by == "dsr" and selection.ok:
                best = max(tested, key=lambda t: (selection.dsr[t.number], -t.number))
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
            {
                "best_value": best.value,
                "n_trials_completed": float(result.n_finished),
                **({} if selection is None else selection.metrics(best.number)),
            },
            {
                "best_trial": str(best.number),
                "best_params": json.dumps(best.params),
                "rank_by": job.rank_by,
                **(
                    {}
                    if selection is None or selection.ok
                    else {"pbo_unavailable": selection.message}
                ),
            },
            "FINISHED",
        )
        best_params = get_plugin(study.plugin_key).check_params(best.params)
        experiment_id = await self._experiments.record_result(
            lineage,
            parent,
            {"plugin_key": study.plugin_key, **best_params},
            best.metrics | ({} if selection is None else selection.metrics(best.number)),
            {"run_type": "tuning", "study_name": job.study_name, "best_trial": str(best.number)},
        )
        if progress is not None:
            await progress(result.n_finished, study.n_trials, "done")
        return TuneResult(
            best_params=best_params,
            best_value=best.value,
            n_trials_completed=result.n_finished,
            trials=result.trials,
            study_name=job.study_name,
            mlflow_run_id=parent,
            experiment_id=experiment_id,
            plugin_key=study.plugin_key,
            metric=study.metric,
            direction=study.direction,
            best_trial=best.number,
            best_metrics=best.metrics,
            selection=selection,
            rank_by=job.rank_by,
        )

    # --- AutoML --------------------------------------------------------------------------

    async def prepare_automl(self, tenant: str, spec: AutoMLSpec) -> AutoMLJob:
        candidates = spec.candidates or {
            p.key: {} for p in plugins() if p.family == "machine_learning"
        }
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
            if spec.tune_trials:
                # Tuning searches what the candidate leaves unset: keep only its own values.
                checked[plugin.key] = {k: checked[plugin.key][k] for k in params}
        if not 0 <= spec.tune_trials <= MAX_AUTOML_TRIALS:
            raise InvalidArgument(
                f"tune_trials must be 0..{MAX_AUTOML_TRIALS}", reason="INVALID_N_TRIALS"
            )
        if spec.ensemble_top_k < 0 or spec.ensemble_top_k == 1:
            raise InvalidArgument(
                "ensemble_top_k must be 0 (no ensemble) or at least 2",
                reason="INVALID_ENSEMBLE_TOP_K",
            )
        metric = tuning.resolve_metric(spec.metric)
        config = backtest.resolve(spec.backtest, spec.dataset.timeframe)
        rank_by = _rank_by(spec.rank_by, config)
        return AutoMLJob(
            candidates=checked,
            metric=metric,
            direction=tuning.natural_direction(metric),
            seed=check_seed(spec.seed) if spec.seed is not None else 0,
            tune_trials=spec.tune_trials,
            ensemble_top_k=spec.ensemble_top_k,
            max_parallel=_max_parallel(spec.max_parallel),
            data=await self._catalog.training_data(tenant, spec.dataset, spec.cv),
            strategy_id=spec.strategy_id,
            cv=spec.cv,
            backtest=config,
            rank_by=rank_by,
        )

    async def automl(
        self,
        tenant: str,
        job: AutoMLJob,
        progress: Progress | None = None,
        task_id: str = "",
        resumed: bool = False,
    ) -> AutoMLResult:
        lineage = self._lineage(tenant, job.data, job.strategy_id, "automl")
        if resumed:
            await self._mlflow.end_task_runs(task_id)
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
            {TASK_TAG: task_id} if task_id else {},
        )
        async with parent_run(self._mlflow, parent):
            await engine.ensure_ray()
            shared = job.data.shared(job.data.backtester(job.backtest, job.cv))
            board = await AutoML(shared, job.metric, job.direction, job.seed, job.max_parallel).run(
                job.candidates, job.tune_trials, job.ensemble_top_k, progress
            )
        selection = None
        if job.backtest is not None:
            tested = [r for r in board.rows if r.rank and r.oos_return]
            selection = await asyncio.to_thread(
                select,
                [r.plugin_key for r in tested],
                [r.oos_return for r in tested],
                job.backtest.periods_per_year,
            )
            if job.rank_by == "dsr" and selection.ok:
                board = replace(board, rows=rank_by_score(board.rows, selection.dsr))
        child = replace(lineage, run_type="automl_candidate")
        run_ids = []
        for row in board.rows:
            run_ids.append(
                await self._mlflow.log_child(
                    parent,
                    f"{row.plugin_key}-rank-{row.rank}" if row.rank else f"{row.plugin_key}-failed",
                    child,
                    {"plugin_key": row.plugin_key, **row.params},
                    (row.metrics or {}) | _oos(row.oos_sharpe, row.oos_psr),
                    {"rank": str(row.rank), "status": row.status, "error": row.error[:5000]},
                    "FINISHED" if row.status == "SUCCEEDED" else "FAILED",
                )
            )
        winner = board.rows[0] if board.rows and board.rows[0].rank == 1 else None
        experiment_id = ""
        if winner is not None:
            await self._mlflow.finish_parent(
                parent,
                {
                    f"best_{job.metric}": winner.score,
                    **({} if selection is None else selection.metrics(winner.plugin_key)),
                },
                {
                    "best_plugin": winner.plugin_key,
                    "rank_by": job.rank_by,
                    **(
                        {}
                        if selection is None or selection.ok
                        else {"pbo_unavailable": selection.message}
                    ),
                },
                "FINISHED",
            )
            experiment_id = await self._experiments.record_result(
                lineage,
                parent,
                {"plugin_key": winner.plugin_key, **winner.params},
                (winner.metrics or {})
                | ({} if selection is None else selection.metrics(winner.plugin_key)),
                {"run_type": "automl", "rank": "1"},
            )
        else:
            await self._mlflow.finish_parent(parent, {}, {}, "FAILED")
        return AutoMLResult(board, run_ids, parent, experiment_id, selection, job.rank_by)


def _oos(sharpe: float | None, psr: float | None) -> dict[str, float]:
    """A trial's or row's own out-of-sample Sharpe and PSR as its nested run's metrics."""
    values = {"oos_sharpe": sharpe, "oos_psr": psr}
    return {k: v for k, v in values.items() if v is not None}


def _rank_by(value: str, config: BacktestConfig | None) -> str:
    rank_by = value or "metric"
    if rank_by not in RANK_BY:
        raise InvalidArgument(
            f"rank_by must be one of {', '.join(RANK_BY)}, got {value!r}",
            reason="INVALID_RANK_BY",
        )
    if rank_by == "dsr" and config is None:
        raise InvalidArgument(
            "rank_by dsr needs a backtest: give a backtest section with periods_per_year",
            reason="INVALID_RANK_BY",
        )
    return rank_by


def _max_parallel(value: int) -> int:
    if not 0 <= value <= MAX_PARALLEL:
        raise InvalidArgument(
            f"max_parallel must be 0 (the cluster's CPUs) to {MAX_PARALLEL}",
            reason="INVALID_MAX_PARALLEL",
        )
    return value
