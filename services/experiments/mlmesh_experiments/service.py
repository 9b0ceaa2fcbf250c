"""The experiment registry's use cases: tenancy, validation and comparison rules over the store
and the artifact store."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

from mlmesh_common import compare, history, quant
from mlmesh_common.artifacts import ArtifactEntry, ArtifactStore, parse_upload
from mlmesh_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from mlmesh_common.resources import (
    Page,
    check_all_owned,
    check_owned,
    is_uuid,
    new_id,
    now_ms,
    page,
    page_window,
)
from mlmesh_common.text import check_no_nul
from mlmesh_experiments import domain, overfitting
from mlmesh_experiments.entities import (
    ACTIVE,
    DELETED,
    ENDED,
    WRITABLE_FIELDS,
    Experiment,
    HistoryPoint,
    MetricPoint,
    MetricSeries,
    Run,
)
from mlmesh_experiments.storage.base import (
    ExperimentQuery,
    ExperimentStore,
    HistoryQuery,
    IdempotentCall,
    RunQuery,
    StoredArtifactRecord,
)

_STAGES = {"": ACTIVE, ACTIVE: ACTIVE, DELETED: DELETED, "all": "all"}
# Whether a metric was logged at all: one point of its whole history.
ONE = HistoryQuery(max_points=1)
# Every point (the overfitting report reads whole histories).
WHOLE = HistoryQuery()


@dataclass(frozen=True)
class BatchCounts:
    metrics: int
    params: int
    tags: int


@dataclass(frozen=True)
class ExperimentComparison:
    experiments: list[Experiment]
    metric_diff: dict[str, compare.MetricDiff]


@dataclass(frozen=True)
class RunComparison:
    runs: list[Run]
    metric_diff: dict[str, compare.MetricDiff]
    param_diff: dict[str, compare.ParamDiff]


@dataclass(frozen=True)
class RunOverfitting:
    """The selection-bias statistics of a set of runs; `report` indexes runs as `run_ids`."""

    run_ids: list[str]
    metric_key: str
    periods_per_year: float
    report: quant.SelectionBias


@dataclass(frozen=True)
class ArtifactListing:
    root_uri: str
    entries: list[ArtifactEntry]
    records: dict[str, StoredArtifactRecord]


def _check_experiment_fields(fields: dict[str, Any]) -> None:
    domain.check_text(fields.get("name", ""), domain.MAX_NAME, "name")
    domain.check_text(fields.get("description", ""), domain.MAX_DESCRIPTION, "description")
    lineage = ("strategy_id", "dataset_version", "feature_version", "model_version")
    for name in (*lineage, "git_commit", "mlflow_run_id"):
        domain.check_text(fields.get(name, ""), domain.MAX_NAME, name)
    domain.check_entries(fields.get("tags", {}), domain.MAX_TAG_VALUE, "tag")
    domain.check_entries(fields.get("artifacts", {}), domain.MAX_TAG_VALUE, "artifact")
    for key in fields.get("metrics", {}):
        domain.check_key(key, "metric")
    for key in fields.get("parameters", {}):
        domain.check_key(key, "parameter")
    # Every text field, artifact_location and the free-form parameters included.
    check_no_nul(fields, "experiment")


class ExperimentsService:
    def __init__(
        self,
        store: ExperimentStore,
        artifacts: ArtifactStore,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._store = store
        self._artifacts = artifacts
        self._clock = clock

    def idempotent(
        self, tenant: str, key: str, fingerprint: str
    ) -> contextlib.AbstractAsyncContextManager[IdempotentCall]:
        """A write made with an idempotency key (see ExperimentStore.idempotent)."""
        return self._store.idempotent(tenant, key, fingerprint)

    # --- experiments ---------------------------------------------------------------------

    async def create_experiment(self, tenant: str, fields: dict[str, Any]) -> Experiment:
        _check_experiment_fields(fields)
        generated = not fields.get("name", "").strip()
        now = self._clock()
        values = {k: v for k, v in fields.items() if k in WRITABLE_FIELDS}
        for _ in range(3 if generated else 1):
            if generated:
                values["name"] = domain.generated_name()
            experiment = Experiment(
                id=new_id(), tenant=tenant, created_at=now, updated_at=now, **values
            )
            try:
                await self._store.create_experiment(experiment)
                return experiment
            except AlreadyExists:
                if not generated:
                    raise
        raise AlreadyExists("could not generate a unique name", reason="EXPERIMENT_NAME_TAKEN")

    async def get_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        found = await self._experiments(experiment_id)
        experiment = found.get(experiment_id)
        check_owned(experiment, tenant, "experiment", experiment_id)
        return experiment

    async def _experiments(self, *ids: str) -> dict[str, Experiment]:
        valid = [i for i in ids if is_uuid(i)]
        return await self._store.get_experiments(valid) if valid else {}

    async def list_experiments(
        self,
        tenant: str,
        *,
        strategy_id: str = "",
        search: str = "",
        lifecycle_stage: str = "",
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
    ) -> Page:
        stage = _STAGES.get(lifecycle_stage.lower())
        if stage is None:
            raise InvalidArgument(
                f"lifecycle_stage must be active, deleted or all, got {lifecycle_stage!r}",
                reason="INVALID_LIFECYCLE_STAGE",
            )
        domain.check_text(search, domain.MAX_NAME, "search")
        domain.check_text(strategy_id, domain.MAX_NAME, "strategy_id")
        offset, limit = page_window(limit, offset, page_token)
        query = ExperimentQuery(tenant, offset, limit, strategy_id, search, stage)
        experiments, total = await self._store.list_experiments(query)
        return page(experiments, offset, total)

    async def update_experiment(
        self, tenant: str, experiment_id: str, fields: dict[str, Any], mask: Sequence[str]
    ) -> Experiment:
        experiment = await self.get_experiment(tenant, experiment_id)
        unknown = sorted(set(mask) - set(WRITABLE_FIELDS))
        if unknown:
            raise InvalidArgument(
                f"update_mask names fields that cannot be updated: {', '.join(unknown)}",
                reason="INVALID_UPDATE_MASK",
                metadata={"fields": ",".join(unknown)},
            )
        if mask:
            changes = {name: fields[name] for name in mask}
        else:
            # AIP-134 without a mask: the fields present (non-empty) in the body are replaced.
            changes = {name: value for name, value in fields.items() if value}
        if "name" in changes and not changes["name"].strip():
            raise InvalidArgument("name cannot be empty", reason="INVALID_NAME")
        _check_experiment_fields(changes)
        if not changes:
            return experiment
        changes["updated_at"] = self._clock()
        await self._store.update_experiment(experiment_id, changes)
        for name, value in changes.items():
            setattr(experiment, name, value)
        return experiment

    async def delete_experiment(self, tenant: str, experiment_id: str) -> None:
        experiment = await self.get_experiment(tenant, experiment_id)
        if experiment.lifecycle_stage == DELETED:
            raise FailedPrecondition(
                f"experiment {experiment_id} is already deleted",
                reason="EXPERIMENT_ALREADY_DELETED",
            )
        await self._store.update_experiment(
            experiment_id, {"lifecycle_stage": DELETED, "updated_at": self._clock()}
        )

    async def restore_experiment(self, tenant: str, experiment_id: str) -> Experiment:
        experiment = await self.get_experiment(tenant, experiment_id)
        if experiment.lifecycle_stage == ACTIVE:
            raise FailedPrecondition(
                f"experiment {experiment_id} is not deleted", reason="EXPERIMENT_NOT_DELETED"
            )
        changes = {"lifecycle_stage": ACTIVE, "updated_at": self._clock(), "name": experiment.name}
        await self._store.update_experiment(experiment_id, changes)
        experiment.lifecycle_stage, experiment.updated_at = ACTIVE, changes["updated_at"]
        return experiment

    async def compare_experiments(
        self, tenant: str, ids: Sequence[str], maximize: Sequence[str] = ()
    ) -> ExperimentComparison:
        compare.check_compare_ids(ids)
        found = await self._experiments(*ids)
        check_all_owned(found, ids, tenant, "experiment")
        experiments = [found[i] for i in ids]
        metrics = {e.id: e.metrics for e in experiments}
        return ExperimentComparison(experiments, compare.metric_diff(ids, metrics, maximize))

    # --- runs ----------------------------------------------------------------------------

    async def create_run(
        self,
        tenant: str,
        experiment_id: str,
        name: str = "",
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> Run:
        if not experiment_id:
            raise InvalidArgument("experiment_id is required", reason="MISSING_EXPERIMENT_ID")
        domain.check_text(name, domain.MAX_NAME, "name")
        domain.check_text(description, domain.MAX_DESCRIPTION, "description")
        tags = dict(tags or {})
        domain.check_count(tags, domain.MAX_BATCH_TAGS, "tags")
        domain.check_entries(tags, domain.MAX_TAG_VALUE, "tag")
        if not is_uuid(experiment_id):
            check_owned(None, tenant, "experiment", experiment_id)
        run_id = new_id()
        run = Run(
            id=run_id,
            tenant=tenant,
            experiment_id=experiment_id,
            status="RUNNING",
            start_time=self._clock(),
            name=name,
            description=description,
            artifact_uri=self._artifacts.item_uri(tenant, experiment_id, run_id),
            tags=tags,
        )
        # One step: the experiment's checks and the insert (one statement on PostgreSQL).
        found = await self._store.create_run(run)
        check_owned(found, tenant, "experiment", experiment_id)
        if found.lifecycle_stage == DELETED:
            raise FailedPrecondition(
                f"experiment {experiment_id} is deleted; restore it first",
                reason="EXPERIMENT_DELETED",
            )
        return run

    async def get_run(self, tenant: str, run_id: str, *, hydrate: bool = True) -> Run:
        runs = await self._runs(run_id, hydrate=hydrate)
        run = runs.get(run_id)
        check_owned(run, tenant, "run", run_id)
        return run

    async def _runs(self, *ids: str, hydrate: bool = True) -> dict[str, Run]:
        valid = [i for i in ids if is_uuid(i)]
        return await self._store.get_runs(valid, hydrate=hydrate) if valid else {}

    async def list_runs(
        self,
        tenant: str,
        *,
        experiment_id: str = "",
        status: str = "",
        filter_text: str = "",
        limit: int = 0,
        offset: int = 0,
        page_token: str = "",
        order_by: Sequence[str] = (),
        include_total: bool = True,
    ) -> Page:
        """A page of the matching runs, in `order_by` order. Without `include_total` nothing counts
        the matches (`total` is -1): one more run than the page holds says whether another
        page follows."""
        clauses = domain.parse_run_filter(filter_text)
        order = domain.parse_order_by(order_by)
        offset, limit = page_window(limit, offset, page_token)
        if experiment_id and not is_uuid(experiment_id):
            # No such experiment (404), and its text (a NUL byte) never reaches the database.
            await self.get_experiment(tenant, experiment_id)
        wanted = limit if include_total else limit + 1
        query = RunQuery(
            tenant, offset, wanted, experiment_id, status, clauses, order, include_total
        )
        runs, total = await self._store.list_runs(query)
        if experiment_id and not runs and not total:
            # The search filters by tenant itself, and a run carries its experiment's tenant: a
            # match proves the experiment is the caller's. Without one, the ownership check
            # tells a 404 or 403 apart from an empty page.
            await self.get_experiment(tenant, experiment_id)
        if include_total:
            return page(runs, offset, total)
        more = len(runs) > limit
        return page(runs[:limit], offset, offset + limit + 1 if more else 0, total=-1)

    async def _writable_run(self, tenant: str, run_id: str) -> Run:
        run = await self.get_run(tenant, run_id, hydrate=False)
        if run.lifecycle_stage == DELETED:
            raise FailedPrecondition(
                f"run {run_id} belongs to a deleted experiment", reason="RUN_DELETED"
            )
        return run

    async def log_batch(
        self,
        tenant: str,
        run_id: str,
        metrics: Sequence[MetricPoint] = (),
        params: Sequence[tuple[str, str]] = (),
        tags: Sequence[tuple[str, str]] = (),
        series: Sequence[MetricSeries] = (),
    ) -> BatchCounts:
        """Validates everything first, then writes everything in one transaction; the series'
        points come after `metrics`, in order."""
        domain.check_count(metrics, domain.MAX_BATCH_METRICS, "metrics")
        domain.check_count(params, domain.MAX_BATCH_PARAMS, "params")
        domain.check_count(tags, domain.MAX_BATCH_TAGS, "tags")
        if series:
            metrics = [*metrics, *_series_points(series, len(metrics))]
        now = self._clock()
        # Column by column in C (map, min, all): a batch holds thousands of points.
        for key in set(map(_KEY, metrics)):  # a batch has few distinct keys
            domain.check_key(key, "metric")
        if min(map(_TIMESTAMP, metrics), default=0) < 0:
            negative = next(point for point in metrics if point.timestamp < 0)
            raise InvalidArgument(
                f"metric {negative.key!r}: timestamp must be >= 0", reason="INVALID_TIMESTAMP"
            )
        points = metrics
        if not all(map(_TIMESTAMP, metrics)):
            points = [point if point.timestamp else _stamped(point, now) for point in metrics]
        param_map = _unique_entries(params, "param")
        tag_map = dict(tags)
        domain.check_entries(param_map, domain.MAX_PARAM_VALUE, "param")
        domain.check_entries(tag_map, domain.MAX_TAG_VALUE, "tag")
        await self._writable_run(tenant, run_id)
        await self._store.log_batch(tenant, run_id, points, param_map, tag_map)
        return BatchCounts(len(points), len(param_map), len(tag_map))

    async def end_run(self, tenant: str, run_id: str, status: str = "") -> Run:
        status = status or "FINISHED"
        if status not in ENDED:
            raise InvalidArgument(
                f"a run ends FINISHED, FAILED or KILLED, not {status}", reason="INVALID_STATUS"
            )
        await self._writable_run(tenant, run_id)
        if not await self._store.end_run(run_id, status, self._clock()):
            raise FailedPrecondition(f"run {run_id} has already ended", reason="RUN_ALREADY_ENDED")
        return await self.get_run(tenant, run_id)

    async def metric_history(
        self,
        tenant: str,
        run_id: str,
        key: str,
        max_points: int = 0,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> tuple[list[HistoryPoint], int]:
        """The metric's points in the step range, downsampled to `max_points` (min/max buckets),
        and how many the range holds; 404 for a metric the run never logged."""
        history.check_max_points(max_points)
        history.check_step_range(start_step, end_step)
        await self.get_run(tenant, run_id, hydrate=False)
        query = HistoryQuery(max_points, start_step, end_step)
        points, total = await self._store.metric_history(tenant, run_id, key, query)
        ranged = start_step is not None or end_step is not None
        # An empty range of a logged metric is an empty answer, an unlogged metric a 404.
        if not points and (
            not ranged or not (await self._store.metric_history(tenant, run_id, key, ONE))[0]
        ):
            raise NotFound(
                f"run {run_id} has no metric {key!r}",
                reason="METRIC_NOT_FOUND",
                metadata={"run_id": run_id, "key": key},
            )
        return points, total

    async def compare_runs(
        self,
        tenant: str,
        ids: Sequence[str],
        metrics: Sequence[str] = (),
        maximize: Sequence[str] = (),
    ) -> RunComparison:
        compare.check_compare_ids(ids)
        found = await self._runs(*ids)
        check_all_owned(found, ids, tenant, "run")
        runs = [found[i] for i in ids]
        return RunComparison(
            runs,
            compare.metric_diff(ids, {r.id: r.metrics for r in runs}, maximize, only=metrics),
            compare.param_diff(ids, {r.id: r.params for r in runs}),
        )

    async def run_overfitting(
        self,
        tenant: str,
        *,
        run_ids: Sequence[str] = (),
        experiment_id: str = "",
        filter_text: str = "",
        metric_key: str = "",
        n_blocks: int | None = None,
        periods_per_year: float | None = None,
    ) -> RunOverfitting:
        """PBO, Sharpe, PSR and DSR of the runs' `metric_key` histories as per-period returns,
        aligned on the steps every run has. The alignment and CSCV run in a worker thread."""
        metric_key = metric_key or overfitting.DEFAULT_METRIC
        domain.check_key(metric_key, "metric")
        n_blocks = overfitting.DEFAULT_BLOCKS if n_blocks is None else n_blocks
        overfitting.check_blocks(n_blocks)
        if periods_per_year is None:
            periods_per_year = overfitting.DEFAULT_PERIODS_PER_YEAR
        overfitting.check_periods_per_year(periods_per_year)
        ids = await self._overfitting_runs(tenant, run_ids, experiment_id, filter_text)
        histories = {
            i: (await self._store.metric_history(tenant, i, metric_key, WHOLE))[0] for i in ids
        }
        report = await asyncio.to_thread(overfitting.evaluate, ids, histories, metric_key, n_blocks)
        return RunOverfitting(list(ids), metric_key, periods_per_year, report)

    async def _overfitting_runs(
        self, tenant: str, run_ids: Sequence[str], experiment_id: str, filter_text: str
    ) -> list[str]:
        """The runs named, or those of an experiment that match the filter (newest first)."""
        if run_ids and experiment_id:
            raise InvalidArgument(
                "give run_ids or experiment_id, not both", reason="AMBIGUOUS_RUN_SELECTION"
            )
        if filter_text and not experiment_id:
            raise InvalidArgument(
                "filter selects runs of an experiment_id", reason="FILTER_WITHOUT_EXPERIMENT"
            )
        if not run_ids and not experiment_id:
            raise InvalidArgument(
                "give run_ids (2 to 1000) or an experiment_id", reason="MISSING_RUN_SELECTION"
            )
        if not experiment_id:
            overfitting.check_run_ids(run_ids)
            found = await self._runs(*run_ids, hydrate=False)
            check_all_owned(found, run_ids, tenant, "run")
            return list(run_ids)
        clauses = domain.parse_run_filter(filter_text)
        await self.get_experiment(tenant, experiment_id)
        query = RunQuery(tenant, 0, overfitting.MAX_RUNS, experiment_id, "", clauses)
        runs, total = await self._store.list_runs(query)
        overfitting.check_run_count(total, f"experiment {experiment_id} with this filter")
        return [run.id for run in runs]

    # --- artifacts -----------------------------------------------------------------------

    async def log_artifact(
        self, tenant: str, run_id: str, artifact_path: str, content_type: str, body: bytes
    ) -> StoredArtifactRecord:
        key, data = parse_upload(content_type, body, artifact_path)
        run = await self._writable_run(tenant, run_id)
        stored = await self._artifacts.put(tenant, run.experiment_id, run_id, key, data)
        record = StoredArtifactRecord(stored.path, stored.size_bytes, stored.sha256, stored.uri)
        await self._store.record_artifact(tenant, run_id, record, self._clock())
        return record

    async def list_artifacts(self, tenant: str, run_id: str, path: str = "") -> ArtifactListing:
        run = await self.get_run(tenant, run_id, hydrate=False)
        entries = await self._artifacts.list(tenant, run.experiment_id, run_id, path)
        records = await self._store.artifact_records(tenant, run_id)
        return ArtifactListing(run.artifact_uri, entries, records)

    async def download_artifact(self, tenant: str, run_id: str, path: str) -> tuple[bytes, str]:
        run = await self.get_run(tenant, run_id, hydrate=False)
        data = await self._artifacts.get(tenant, run.experiment_id, run_id, path)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return data, content_type


_KEY, _TIMESTAMP = itemgetter(0), itemgetter(3)  # of a MetricPoint


def _series_points(series: Sequence[MetricSeries], logged: int) -> list[MetricPoint]:
    """The series' points in order, once every series is checked: its steps and timestamps one
    per value or none, and the batch's limit on points with the `logged` ones before them
    (checked before any point is built)."""
    total = 0
    for item in series:
        domain.check_key(item.key, "metric")
        count = len(item.values)
        for name, column in (("steps", item.steps), ("timestamps", item.timestamps)):
            if len(column) not in (0, count):
                raise InvalidArgument(
                    f"series {item.key!r}: {len(column)} {name} for {count} values; "
                    f"give one per value, or none",
                    reason="SERIES_LENGTH_MISMATCH",
                    metadata={"key": item.key, "field": name},
                )
        total += count
    domain.check_total(logged + total, domain.MAX_BATCH_METRICS, "metrics")
    points: list[MetricPoint] = []
    for item in series:
        count = len(item.values)
        columns = zip(
            repeat(item.key, count),
            item.values,
            item.steps or repeat(0, count),
            item.timestamps or repeat(0, count),
            strict=True,
        )
        # tuple.__new__ straight from C: MetricPoint(...) would run Python for every point.
        points.extend(map(tuple.__new__, repeat(MetricPoint), columns))
    return points


def _stamped(point: MetricPoint, timestamp: int) -> MetricPoint:
    return MetricPoint(point.key, point.value, point.step, timestamp)


def _unique_entries(entries: Sequence[tuple[str, str]], field: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in entries:
        if result.get(key, value) != value:
            raise InvalidArgument(
                f"{field} {key!r} appears twice with different values",
                reason="DUPLICATE_KEY",
                metadata={"key": key},
            )
        result[key] = value
    return result
