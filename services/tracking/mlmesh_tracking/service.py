"""The tracking use cases: what a caller may see of the MLflow runs, scoped to their tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mlmesh_common import compare, history
from mlmesh_common.errors import NotFound, PermissionDenied
from mlmesh_common.resources import check_all_owned
from mlmesh_tracking import domain
from mlmesh_tracking.entities import ExperimentRecord, MetricPoint, RunRecord
from mlmesh_tracking.storage import RunStore


@dataclass(frozen=True)
class RunPage:
    runs: list[RunRecord]
    next_page_token: str


@dataclass(frozen=True)
class MetricHistory:
    points: list[MetricPoint]
    total_points: int


@dataclass(frozen=True)
class Comparison:
    runs: list[RunRecord]
    metric_diff: dict[str, compare.MetricDiff]
    param_diff: dict[str, compare.ParamDiff]


class TrackingService:
    def __init__(self, store: RunStore, experiment_names: Sequence[str] = ()) -> None:
        self._store = store
        self._experiment_names = list(experiment_names)

    async def list_experiments(self) -> list[ExperimentRecord]:
        return await self._store.list_experiments(self._experiment_names)

    async def _visible_experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in await self.list_experiments()]

    async def search_runs(
        self,
        tenant: str,
        *,
        run_type: str = "",
        strategy_id: str = "",
        experiment_id: str = "",
        status: str = "",
        user_filter: str = "",
        order_by: Sequence[str] = (),
        limit: int = 0,
        page_token: str = "",
    ) -> RunPage:
        domain.check_text(
            run_type=run_type,
            strategy_id=strategy_id,
            experiment_id=experiment_id,
            filter=user_filter,
            order_by=list(order_by),
            page_token=page_token,
        )
        max_results = domain.clamp_limit(limit)
        if user_filter.strip():
            self._store.validate_filter(user_filter)
        order_by = [clause for clause in order_by if clause.strip()] or list(
            domain.DEFAULT_ORDER_BY
        )
        self._store.validate_order_by(order_by)
        if page_token:
            self._store.validate_page_token(page_token)
        filter_string = domain.build_run_filter(
            tenant=tenant,
            run_type=run_type,
            strategy_id=strategy_id,
            status=status,
            user_filter=user_filter,
        )
        experiment_ids = await self._visible_experiment_ids()
        if experiment_id:
            if experiment_id not in experiment_ids:
                raise NotFound(
                    f"experiment {experiment_id} not found",
                    reason="EXPERIMENT_NOT_FOUND",
                    metadata={"experiment_id": experiment_id},
                )
            experiment_ids = [experiment_id]
        if not experiment_ids:
            return RunPage([], "")
        runs, token = await self._store.search_runs(
            experiment_ids, filter_string, order_by, max_results, page_token
        )
        return RunPage(runs, token)

    def _check_visible(self, run: RunRecord | None, run_id: str, tenant: str, visible: list[str]):
        if run is None or run.experiment_id not in visible:
            raise NotFound(
                f"run {run_id} not found", reason="RUN_NOT_FOUND", metadata={"run_id": run_id}
            )
        if run.tenant != tenant:
            raise PermissionDenied(
                f"run {run_id} belongs to another tenant",
                reason="TENANT_MISMATCH",
                metadata={"run_id": run_id},
            )

    async def get_run(self, tenant: str, run_id: str) -> RunRecord:
        domain.check_text(run_id=run_id)
        run, visible = await asyncio.gather(
            self._store.get_run(run_id), self._visible_experiment_ids()
        )
        self._check_visible(run, run_id, tenant, visible)
        return run

    async def metric_history(
        self,
        tenant: str,
        run_id: str,
        key: str,
        max_points: int = 0,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> MetricHistory:
        domain.check_text(key=key)
        history.check_max_points(max_points)
        history.check_step_range(start_step, end_step)
        await self.get_run(tenant, run_id)
        # MLflow's API returns a history whole: the range and the buckets are applied here.
        points = await self._store.get_metric_history(run_id, key)
        points = history.in_step_range(points, start_step, end_step, lambda point: point.step)
        return MetricHistory(history.downsample(points, max_points), len(points))

    async def compare_runs(
        self, tenant: str, run_ids: Sequence[str], maximize: Sequence[str] = ()
    ) -> Comparison:
        domain.check_text(run_ids=list(run_ids), maximize=list(maximize))
        compare.check_compare_ids(run_ids)
        visible = await self._visible_experiment_ids()
        runs = await asyncio.gather(*(self._store.get_run(run_id) for run_id in run_ids))
        found = {
            run_id: run
            for run_id, run in zip(run_ids, runs, strict=True)
            if run is not None and run.experiment_id in visible
        }
        check_all_owned(found, run_ids, tenant, "run")
        ordered = [found[run_id] for run_id in run_ids]
        return Comparison(
            runs=ordered,
            metric_diff=compare.metric_diff(
                run_ids, {r.run_id: r.metrics for r in ordered}, maximize
            ),
            param_diff=compare.param_diff(run_ids, {r.run_id: r.params for r in ordered}),
        )
