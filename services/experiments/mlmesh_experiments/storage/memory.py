"""The experiment registry in process memory: the reference behaviour of the store interface, for
tests and throwaway runs. Every method runs without awaiting, so each is atomic on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from mlmesh_common import history
from mlmesh_common.errors import AlreadyExists, InvalidArgument
from mlmesh_experiments.entities import ACTIVE, Experiment, HistoryPoint, MetricPoint, Run
from mlmesh_experiments.storage.base import (
    Clause,
    ExperimentQuery,
    ExperimentState,
    ExperimentStore,
    HistoryQuery,
    IdempotentCall,
    Order,
    RunQuery,
    StoredArtifactRecord,
    key_reused,
)

_ATTRIBUTES = {
    "run_id": "id",
    "id": "id",
    "run_name": "name",
    "name": "name",
    "description": "description",
    "status": "status",
    "start_time": "start_time",
    "end_time": "end_time",
}


class InMemoryExperimentStore(ExperimentStore):
    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}
        self._runs: dict[str, Run] = {}  # tags, params and latest metrics kept on the run
        self._latest: dict[str, dict[str, tuple[int, int]]] = {}  # run -> key -> (step, ts)
        self._history: dict[tuple[str, str], list[HistoryPoint]] = {}
        self._artifacts: dict[tuple[str, str], dict[str, StoredArtifactRecord]] = {}
        # (tenant, key) -> (fingerprint, first answer); nothing expires in a throwaway store.
        self._answers: dict[tuple[str, str], tuple[str, bytes]] = {}
        self._answering = asyncio.Lock()

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def idempotent(
        self, tenant: str, key: str, fingerprint: str
    ) -> AsyncIterator[IdempotentCall]:
        # One idempotent call at a time; a failed call's writes are not undone (nothing is
        # durable here anyway), but its key stays free.
        async with self._answering:
            first = self._answers.get((tenant, key))
            if first is not None:
                if first[0] != fingerprint:
                    raise key_reused(key)
                yield IdempotentCall(stored=first[1])
                return
            call = IdempotentCall()
            yield call
            if call.response is None:
                raise RuntimeError("an idempotent call ended without its response")
            self._answers[(tenant, key)] = (fingerprint, call.response)

    # --- experiments ---------------------------------------------------------------------

    async def create_experiment(self, experiment: Experiment) -> None:
        self._check_name_free(experiment)
        self._experiments[experiment.id] = _copy(experiment)

    async def get_experiments(self, ids: Sequence[str]) -> dict[str, Experiment]:
        return {i: _copy(self._experiments[i]) for i in ids if i in self._experiments}

    async def list_experiments(self, query: ExperimentQuery) -> tuple[list[Experiment], int]:
        needle = query.search.lower()
        found = [
            e
            for e in self._experiments.values()
            if e.tenant == query.tenant
            and (query.stage == "all" or e.lifecycle_stage == query.stage)
            and (not query.strategy_id or e.strategy_id == query.strategy_id)
            and needle in e.name.lower()
        ]
        found.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        window = found[query.offset : query.offset + query.limit]
        return [_copy(e) for e in window], len(found)

    async def update_experiment(self, experiment_id: str, changes: dict[str, Any]) -> None:
        updated = dataclasses.replace(self._experiments[experiment_id], **changes)
        self._check_name_free(updated)
        self._experiments[experiment_id] = _copy(updated)

    def _check_name_free(self, experiment: Experiment) -> None:
        """A name is unique among a tenant's active experiments (archived ones keep theirs)."""
        if experiment.lifecycle_stage != ACTIVE:
            return
        for other in self._experiments.values():
            if (
                other.id != experiment.id
                and other.tenant == experiment.tenant
                and other.name == experiment.name
                and other.lifecycle_stage == ACTIVE
            ):
                raise AlreadyExists(
                    f"an active experiment named {experiment.name!r} already exists",
                    reason="EXPERIMENT_NAME_TAKEN",
                    metadata={"name": experiment.name},
                )

    # --- runs ----------------------------------------------------------------------------

    async def create_run(self, run: Run) -> ExperimentState | None:
        experiment = self._experiments.get(run.experiment_id)
        if experiment is None:
            return None
        state = ExperimentState(experiment.tenant, experiment.lifecycle_stage)
        if state.tenant == run.tenant and state.lifecycle_stage == ACTIVE:
            self._runs[run.id] = _copy(run)
            self._latest[run.id] = {}
        return state

    async def get_runs(self, ids: Sequence[str], *, hydrate: bool = True) -> dict[str, Run]:
        return {i: self._view(self._runs[i], hydrate) for i in ids if i in self._runs}

    def _view(self, run: Run, hydrate: bool) -> Run:
        stage = self._experiments[run.experiment_id].lifecycle_stage
        view = dataclasses.replace(run, lifecycle_stage=stage, tags={}, params={}, metrics={})
        if hydrate:
            view.tags, view.params, view.metrics = (
                dict(run.tags),
                dict(run.params),
                dict(run.metrics),
            )
        return view

    async def list_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        found = [
            run
            for run in self._runs.values()
            if run.tenant == query.tenant
            and (not query.experiment_id or run.experiment_id == query.experiment_id)
            and (not query.status or run.status == query.status)
            and all(_matches(run, clause) for clause in query.clauses)
        ]
        found.sort(key=lambda r: (r.start_time, r.id), reverse=True)
        # Stable sorts, last key first: each clause orders the ties of the ones before it.
        for sort in reversed(query.order):
            present = [run for run in found if _sort_value(run, sort) is not None]
            missing = [run for run in found if _sort_value(run, sort) is None]
            present.sort(key=lambda run: _sort_value(run, sort), reverse=not sort.ascending)
            found = present + missing
        window = found[query.offset : query.offset + query.limit]
        return [self._view(run, True) for run in window], len(found)

    async def log_batch(
        self,
        tenant: str,
        run_id: str,
        metrics: Sequence[MetricPoint],
        params: dict[str, str],
        tags: dict[str, str],
    ) -> None:
        run = self._runs[run_id]
        if run.tenant != tenant:  # as the SQL stores' rows of another tenant: never seen
            return
        changed = sorted(k for k, v in params.items() if run.params.get(k, v) != v)
        if changed:  # checked before anything is written: the batch is all or nothing
            raise InvalidArgument(
                f"params are immutable; already logged with another value: {', '.join(changed)}",
                reason="PARAM_ALREADY_LOGGED",
                metadata={"keys": ",".join(changed)},
            )
        run.params.update(params)
        run.tags.update(tags)
        latest = self._latest[run_id]
        for point in metrics:
            self._history.setdefault((run_id, point.key), []).append(
                HistoryPoint(point.step, point.timestamp, point.value)
            )
            # The latest is the highest step, then timestamp; later points win ties.
            if (point.step, point.timestamp) >= latest.get(point.key, (-math.inf, -math.inf)):
                latest[point.key] = (point.step, point.timestamp)
                run.metrics[point.key] = point.value

    async def end_run(self, run_id: str, status: str, end_time: int) -> bool:
        run = self._runs[run_id]
        if run.status not in ("RUNNING", "SCHEDULED"):
            return False
        run.status, run.end_time = status, end_time
        return True

    async def metric_history(
        self, tenant: str, run_id: str, key: str, query: HistoryQuery
    ) -> tuple[list[HistoryPoint], int]:
        run = self._runs.get(run_id)
        points = self._history.get((run_id, key), []) if run and run.tenant == tenant else []
        # The SQL stores' order: points of one step and timestamp by value, NaN last.
        points = history.in_step_range(
            sorted(points, key=_history_order),
            query.start_step,
            query.end_step,
            lambda point: point.step,
        )
        # The SQL stores' blocks (pre-aggregated there), for the same answer.
        block = (
            history.block_width(points[0].step, points[-1].step, query.max_points)
            if points and query.max_points
            else 1
        )
        return history.downsample(points, query.max_points, block=block), len(points)

    # --- artifacts -----------------------------------------------------------------------

    async def record_artifact(
        self, tenant: str, run_id: str, artifact: StoredArtifactRecord, at: int
    ) -> None:
        self._artifacts.setdefault((tenant, run_id), {})[artifact.path] = artifact

    async def artifact_records(self, tenant: str, run_id: str) -> dict[str, StoredArtifactRecord]:
        return dict(self._artifacts.get((tenant, run_id), {}))


def _copy(item: Any) -> Any:
    """A copy with its own dicts: callers never share state with the store."""
    return dataclasses.replace(
        item,
        **{
            f.name: dict(getattr(item, f.name))
            for f in dataclasses.fields(item)
            if isinstance(getattr(item, f.name), dict)
        },
    )


def _matches(run: Run, clause: Clause) -> bool:
    """One filter clause, with SQL's semantics: a missing value matches nothing."""
    if clause.kind == "attribute":
        return _compare(getattr(run, _ATTRIBUTES[clause.key]), clause.op, clause.value)
    if clause.kind == "metric":
        value = run.metrics.get(clause.key)
        if value is None or math.isnan(value):
            return False
        return _compare(value, clause.op, clause.value)
    values = run.params if clause.kind == "param" else run.tags
    if clause.op == "IS NULL":
        return clause.key not in values
    if clause.op == "IS NOT NULL":
        return clause.key in values
    return clause.key in values and _compare(values[clause.key], clause.op, clause.value)


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None:
        return False
    match op:
        case "=":
            return left == right
        case "!=":
            return left != right
        case "<":
            return left < right
        case "<=":
            return left <= right
        case ">":
            return left > right
        case ">=":
            return left >= right
        case "LIKE":
            return _like(right).fullmatch(left) is not None
        case "ILIKE":
            return _like(right, re.IGNORECASE).fullmatch(left) is not None
        case "IN":
            return left in right
        case "NOT IN":
            return left not in right
    raise ValueError(f"unsupported operator {op!r}")


def _like(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """SQL LIKE: `%` any run of characters, `_` exactly one, everything else literal."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), flags | re.DOTALL)


def _sort_value(run: Run, sort: Order) -> Any:
    """The run's value for a sort key (None: missing, sorted last, as the SQL stores do)."""
    if sort.kind == "attribute":
        return getattr(run, _ATTRIBUTES[sort.key])
    value = {"metric": run.metrics, "param": run.params, "tag": run.tags}[sort.kind].get(sort.key)
    if sort.kind == "metric" and value is not None and math.isnan(value):
        return None
    return value


def _history_order(point: HistoryPoint) -> tuple[int, int, bool, float]:
    nan = math.isnan(point.value)
    return point.step, point.timestamp, nan, 0.0 if nan else point.value
