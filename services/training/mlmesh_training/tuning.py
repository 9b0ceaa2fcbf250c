"""Hyper-parameter tuning: Optuna studies driven by ask/tell from the service, one Ray task per
trial, as many at once as the cluster has CPUs (or the request allows).

The study lives in Optuna's RDB storage inside the training database, so that a study that was
interrupted (task cancelled, service stopped or killed) resumes from its finished trials when
the same `study_name` is requested again: its orphaned RUNNING trials are marked FAIL as
interrupted, which does not count against `n_trials`, and only the missing trials run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import ray
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from mlmesh_common.errors import Conflict, DomainError, InvalidArgument
from mlmesh_training import engine
from mlmesh_training.engine import SUMMARY_METRICS, CVResult, FoldEvaluation
from mlmesh_training.plugins import get_plugin
from mlmesh_training.plugins.base import ModelPlugin, ParamSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

CV_METRICS = tuple(f"{stat}_{name}" for name in SUMMARY_METRICS for stat in ("mean", "std"))
DIRECTIONS = ("minimize", "maximize")
MAX_TRIALS = 1000
# Trial user attributes: what the driver records when a trial ends (one write), and why a trial
# was interrupted.
RECORD, INTERRUPTED = "mlmesh.trial", "mlmesh.interrupted"
CONFIG, LEASE = "mlmesh.config", "mlmesh.lease"


# --- request checks ------------------------------------------------------------------------------


def resolve_metric(name: str) -> str:
    """A CV summary name; the bare fold metrics (`directional_accuracy`) name their means."""
    if not name:
        return "mean_mse"
    if name in SUMMARY_METRICS:
        return f"mean_{name}"
    if name not in CV_METRICS:
        raise InvalidArgument(
            f"unknown metric {name!r}; valid: {', '.join(CV_METRICS + SUMMARY_METRICS)}",
            reason="INVALID_METRIC",
            metadata={"valid": ",".join(CV_METRICS)},
        )
    return name


def natural_direction(metric: str) -> str:
    """Directional accuracy is maximized; errors and every dispersion are minimized."""
    return "maximize" if metric == "mean_directional_accuracy" else "minimize"


def resolve_direction(direction: str, metric: str) -> str:
    if not direction:
        return natural_direction(metric)
    if direction not in DIRECTIONS:
        raise InvalidArgument(
            f"direction must be minimize or maximize, got {direction!r}",
            reason="INVALID_DIRECTION",
        )
    return direction


def check_space(
    plugin: ModelPlugin, raw: Mapping[str, Mapping[str, Any]], fixed: Mapping[str, Any]
) -> dict[str, ParamSpec]:
    """The searched parameters: the request's, or the plugin's default space less the fixed
    ones. Every spec must be well-formed and its bounds or choices valid for the parameter."""
    if not raw:
        return {name: spec for name, spec in plugin.search_space().items() if name not in fixed}
    both = sorted(set(raw) & set(fixed))
    if both:
        raise InvalidArgument(
            f"parameter(s) both searched and fixed: {', '.join(both)}",
            reason="INVALID_PARAM_SPEC",
        )
    space: dict[str, ParamSpec] = {}
    for name, data in raw.items():
        try:
            spec = ParamSpec.from_dict(data)
        except InvalidArgument as error:
            raise InvalidArgument(
                f"param_space[{name!r}]: {error.message}",
                reason="INVALID_PARAM_SPEC",
                metadata={"parameter": name},
            ) from error
        values = list(spec.choices) if spec.type == "categorical" else [spec.low, spec.high]
        if spec.type == "int":
            values = [int(value) for value in values]
        for value in values:
            # The plugin's own check: a name the estimator does not know is UNKNOWN_PARAMETER.
            try:
                plugin.check_params({name: value})
            except InvalidArgument as error:
                if error.reason == "UNKNOWN_PARAMETER":
                    raise
                raise InvalidArgument(
                    f"param_space[{name!r}]: {value!r} is not a valid {name} of {plugin.key}: "
                    f"{error.message}",
                    reason="INVALID_PARAM_SPEC",
                    metadata={"parameter": name},
                ) from error
        space[name] = spec
    return space


def distribution(spec: ParamSpec) -> BaseDistribution:
    if spec.type == "categorical":
        return CategoricalDistribution(list(spec.choices))
    if spec.type == "int":
        return IntDistribution(
            int(spec.low), int(spec.high), log=spec.log, step=int(spec.step or 1)
        )
    return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)


def sync_url(database_url: str) -> str:
    """The training database's URL for Optuna's synchronous SQLAlchemy engine."""
    url = make_url(database_url)
    drivers = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg2"}
    return url.set(drivername=drivers.get(url.drivername, url.drivername)).render_as_string(
        hide_password=False
    )


def open_storage(url: str | None) -> optuna.storages.BaseStorage:
    """Optuna's RDB storage at `url` (its tables live beside the service's own), or an
    in-memory one when `url` is None."""
    if url is None:
        return optuna.storages.InMemoryStorage()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


# --- what a study runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySpec:
    name: str  # the stored name: tenant-scoped
    plugin_key: str
    space: dict[str, ParamSpec]
    fixed: dict[str, Any]
    n_trials: int
    metric: str
    direction: str
    seed: int | None = None
    timeout_s: float | None = None
    max_parallel: int = 0
    pruning: bool = False
    # "tpe" (Optuna's default), or "random": the same parameter sets for a seed whatever the
    # order trials finish in (benchmarks compare executions on identical workloads with it).
    sampler: str = "tpe"
    # What makes two requests the same study (plugin, space, data, CV, metric, direction):
    # a resume with a different one is refused.
    identity: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalData:
    """The study's data, put in Ray's object store once and shared by every trial."""

    X_ref: Any
    y_ref: Any
    folds: list
    # Backtests a completed evaluation's fold predictions (mlmesh_training.backtest.Backtester);
    # None: no backtest.
    backtester: Any = None

    @property
    def train_scale(self) -> bool:
        return self.backtester is not None and self.backtester.train_scale


@dataclass(frozen=True)
class TrialView:
    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    duration_s: float
    started_at: float | None
    finished_at: float | None
    node_id: str
    metrics: dict[str, float]
    error: str
    # A completed trial's stitched out-of-sample P&L and its annualized Sharpe and PSR(0).
    oos_return: list[float] = field(default_factory=list)
    oos_sharpe: float | None = None
    oos_psr: float | None = None

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialView:
        record = trial.user_attrs.get(RECORD, {})
        return cls(
            number=trial.number,
            params=record.get("params", dict(trial.params)),
            value=trial.value if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
            state=trial.state.name,
            duration_s=float(record.get("duration_s", 0.0)),
            started_at=record.get("started_at"),
            finished_at=record.get("finished_at"),
            node_id=record.get("node_id", ""),
            metrics=record.get("metrics", {}),
            error=trial.user_attrs.get(INTERRUPTED) or record.get("error", ""),
            oos_return=record.get("oos_return", []),
            oos_sharpe=record.get("oos_sharpe"),
            oos_psr=record.get("oos_psr"),
        )


@dataclass(frozen=True)
class StudyResult:
    trials: list[TrialView]
    best: TrialView | None
    n_finished: int


@dataclass(frozen=True)
class Outcome:
    """How one trial ended. LOST: its worker or node died; it is re-asked, not counted."""

    state: str  # COMPLETE | PRUNED | FAIL | LOST
    params: dict[str, Any]
    folds: list[FoldEvaluation]
    error: str = ""
    value: float | None = None
    backtest: dict[str, Any] = field(default_factory=dict)  # Backtester.record's


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts against n_trials: it finished, and not by interruption."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and INTERRUPTED not in trial.user_attrs


OnTrial = Callable[[TrialView], Awaitable[None]]
Progress = Callable[[int, int, TrialView | None], Awaitable[None]]


class Tuner:
    """Drives studies in this process; the same study is never driven twice at once."""

    def __init__(self, storage: optuna.storages.BaseStorage, heartbeat_s: float = 5.0) -> None:
        self._storage = storage
        self._heartbeat_s = heartbeat_s
        self._owner = uuid.uuid4().hex
        self._active: set[str] = set()

    @property
    def lease_s(self) -> float:
        """How long a study's lease outlives its driver's last heartbeat, with one to spare."""
        return 4 * self._heartbeat_s

    @contextlib.asynccontextmanager
    async def open(self, spec: StudySpec, wait_s: float = 0.0) -> AsyncIterator[optuna.Study]:
        """The study, created or loaded (a resume), checked against the request and taken
        over from a dead driver; held by this process until the block ends. While another
        driver's lease on it looks alive, retries for up to `wait_s` before it answers
        STUDY_RUNNING (a task taken over from a killed replica waits for that replica's lease
        to lapse)."""
        if spec.name in self._active:
            raise Conflict(f"study {spec.name!r} is already running", reason="STUDY_RUNNING")
        self._active.add(spec.name)
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    study = await asyncio.to_thread(self._open, spec)
                    break
                except Conflict as error:
                    if error.reason != "STUDY_RUNNING" or time.monotonic() >= deadline:
                        raise
                await asyncio.sleep(min(self._heartbeat_s, max(deadline - time.monotonic(), 0)))
            yield study
        finally:
            self._active.discard(spec.name)

    async def drive(
        self,
        study: optuna.Study,
        spec: StudySpec,
        data: EvalData,
        *,
        on_trial: OnTrial | None = None,
        progress: Progress | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> StudyResult:
        """Runs the study's missing trials and returns all of its trials."""
        await self._drive(study, spec, data, on_trial, progress, slots)
        return await asyncio.to_thread(self._result, study)

    async def run(self, spec: StudySpec, data: EvalData, **options) -> StudyResult:
        async with self.open(spec) as study:
            return await self.drive(study, spec, data, **options)

    # --- opening a study -----------------------------------------------------------------

    def _open(self, spec: StudySpec) -> optuna.Study:
        if spec.sampler == "random":
            sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=spec.seed, constant_liar=spec.max_parallel != 1
            )
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
            if spec.pruning
            else optuna.pruners.NopPruner()
        )
        identity = json.loads(json.dumps(spec.identity))
        try:
            study = optuna.create_study(
                storage=self._storage,
                study_name=spec.name,
                direction=spec.direction,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
        except ValueError as error:  # an existing study with the other direction
            raise Conflict(str(error), reason="STUDY_MISMATCH") from error
        stored = study.user_attrs.get(CONFIG)
        if stored is None:
            study.set_user_attr(CONFIG, identity)
        elif stored != identity:
            differing = sorted(
                key for key in set(stored) | set(identity) if stored.get(key) != identity.get(key)
            )
            raise Conflict(
                f"study {spec.name!r} exists with a different {', '.join(differing)}; "
                "name a new study or repeat the original request",
                reason="STUDY_MISMATCH",
                metadata={"fields": ",".join(differing)},
            )
        self._take_over(study)
        return study

    def _take_over(self, study: optuna.Study) -> None:
        """Fails the trials a dead driver left RUNNING, unless a live one still drives them."""
        orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        lease = study.user_attrs.get(LEASE) or {}
        alive = time.time() - float(lease.get("at", 0)) < 3 * self._heartbeat_s
        if orphans and alive and lease.get("owner") != self._owner:
            raise Conflict(
                f"study {study.study_name!r} is being run by another request",
                reason="STUDY_RUNNING",
            )
        for trial in orphans:
            self._interrupt(trial._trial_id, "interrupted: the process driving it stopped")
        self._beat(study)

    def _beat(self, study: optuna.Study) -> None:
        study.set_user_attr(LEASE, {"owner": self._owner, "at": time.time()})

    def _interrupt(self, trial_id: int, why: str) -> None:
        self._storage.set_trial_user_attr(trial_id, INTERRUPTED, why)
        self._storage.set_trial_state_values(trial_id, TrialState.FAIL)

    # --- the ask/tell loop ---------------------------------------------------------------

    async def _drive(self, study, spec, data, on_trial, progress, slots) -> None:
        loop = asyncio.get_running_loop()
        distributions = {name: distribution(s) for name, s in spec.space.items()}
        trials = await asyncio.to_thread(study.get_trials, deepcopy=False)
        finished = sum(counts(t) for t in trials)
        to_start = max(spec.n_trials - finished, 0)
        lost = 0
        deadline = None if spec.timeout_s is None else loop.time() + spec.timeout_s
        running: dict[asyncio.Task, optuna.Trial] = {}
        last_beat = loop.time()
        try:
            while True:
                # Unbounded by the request, one trial more than the CPUs is in flight: Ray
                # starts it the moment a CPU frees, without waiting for the driver's tell/ask.
                limit = spec.max_parallel or max(1, engine.cluster_cpus()) + 1
                while to_start and len(running) < limit and not _expired(loop, deadline):
                    trial = await asyncio.to_thread(study.ask, distributions)
                    task = asyncio.create_task(self._trial(trial, spec, data, slots))
                    running[task] = trial
                    to_start -= 1
                if not running:
                    break
                done, _ = await asyncio.wait(
                    running, timeout=self._heartbeat_s, return_when=asyncio.FIRST_COMPLETED
                )
                if loop.time() - last_beat >= self._heartbeat_s:
                    await asyncio.to_thread(self._beat, study)
                    last_beat = loop.time()
                for task in done:
                    trial = running.pop(task)
                    outcome = task.result()
                    view = await asyncio.to_thread(self._tell, study, trial, outcome)
                    if outcome.state == "LOST":
                        lost += 1
                        if lost > spec.n_trials:
                            raise engine.ClusterLost(outcome.error)
                        to_start += 1
                        continue
                    finished += 1
                    if on_trial is not None:
                        await on_trial(view)
                    if progress is not None:
                        best = await asyncio.to_thread(_best, study)
                        await progress(finished, spec.n_trials, best)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for trial in running.values():
                self._interrupt(trial._trial_id, "interrupted: its study was stopped")
            raise

    async def _trial(self, trial: optuna.Trial, spec: StudySpec, data: EvalData, slots) -> Outcome:
        plugin = get_plugin(spec.plugin_key)
        params = {**spec.fixed, **trial.params}
        try:
            checked = plugin.check_params(params)
        except DomainError as error:  # a combination the plugin refuses
            return Outcome("FAIL", params, [], error.message)
        folds: list[FoldEvaluation] = []
        try:
            async with slots or contextlib.nullcontext():
                stream = engine.evaluate(
                    spec.plugin_key,
                    checked,
                    spec.seed or 0,
                    data.X_ref,
                    data.y_ref,
                    data.folds,
                    fold_by_fold=spec.pruning,
                    train_scale=data.train_scale,
                )
                async with contextlib.aclosing(stream):
                    async for evaluation in stream:
                        folds.append(evaluation)
                        if not spec.pruning or len(folds) == len(data.folds):
                            continue
                        value = CVResult([f.score for f in folds]).summary[spec.metric]
                        await asyncio.to_thread(trial.report, value, len(folds) - 1)
                        if await asyncio.to_thread(trial.should_prune):
                            return Outcome("PRUNED", params, folds, value=value)
        except ray.exceptions.RayTaskError as error:
            return Outcome("FAIL", params, folds, engine.task_error(error))
        except ray.exceptions.RayError as error:  # worker or node lost, object lost
            return Outcome("LOST", params, folds, f"{type(error).__name__}: {error}")
        value = CVResult([f.score for f in folds]).summary[spec.metric]
        tested = {}
        if data.backtester is not None:
            predictions = [f.predictions for f in folds]
            tested = await asyncio.to_thread(data.backtester.record, predictions)
        return Outcome("COMPLETE", params, folds, value=value, backtest=tested)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> TrialView:
        record: dict[str, Any] = {"params": outcome.params}
        if outcome.folds:
            first, last = outcome.folds[0], outcome.folds[-1]
            record.update(
                node_id=first.node_id,
                started_at=first.started,
                finished_at=last.finished,
                duration_s=last.finished - first.started,
            )
        if outcome.state == "COMPLETE":
            record["metrics"] = CVResult([f.score for f in outcome.folds]).summary
            record.update(outcome.backtest)
        elif outcome.state in ("FAIL", "LOST"):
            record["error"] = outcome.error[:2000]
        trial.set_user_attr(RECORD, record)
        if outcome.state == "LOST":
            self._interrupt(trial._trial_id, f"interrupted: {outcome.error}")
            return TrialView.of(self._storage.get_trial(trial._trial_id))
        if outcome.state == "COMPLETE":
            return TrialView.of(study.tell(trial, outcome.value))
        state = TrialState.PRUNED if outcome.state == "PRUNED" else TrialState.FAIL
        return TrialView.of(study.tell(trial, state=state))

    def _result(self, study: optuna.Study) -> StudyResult:
        trials = study.get_trials(deepcopy=False)
        best = _best(study)
        return StudyResult(
            trials=[TrialView.of(t) for t in trials],
            best=best,
            n_finished=sum(counts(t) for t in trials),
        )


def _best(study: optuna.Study) -> TrialView | None:
    try:
        return TrialView.of(study.best_trial)
    except ValueError:  # no completed trial yet
        return None


def _expired(loop: asyncio.AbstractEventLoop, deadline: float | None) -> bool:
    return deadline is not None and loop.time() >= deadline
