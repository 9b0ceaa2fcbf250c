"""The experiment registry on SQLAlchemy async: PostgreSQL (asyncpg) or SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mlmesh_common import history as downsampling
from mlmesh_common.db import driver_connection, ping, reader, search_reader
from mlmesh_common.errors import AlreadyExists, InvalidArgument
from mlmesh_experiments.entities import ACTIVE, Experiment, HistoryPoint, MetricPoint, Run
from mlmesh_experiments.storage import blocks, search
from mlmesh_experiments.storage.base import (
    ExperimentQuery,
    ExperimentState,
    ExperimentStore,
    HistoryQuery,
    IdempotentCall,
    RunQuery,
    StoredArtifactRecord,
    key_reused,
)
from mlmesh_experiments.storage.models import (
    ArtifactRow,
    ExperimentRow,
    IdempotencyKeyRow,
    LatestMetricRow,
    ParamRow,
    RunRow,
    TagRow,
    metric_buckets,
    metric_history,
)

_EXPERIMENT_COLUMNS = [column.key for column in ExperimentRow.__table__.columns]
_RUN_COLUMNS = [column.key for column in RunRow.__table__.columns]


_IDS = bindparam("ids", expanding=True)
# Runs with their experiment's lifecycle stage: by id, one by id, or a search page.
_RUNS = select(RunRow.__table__, ExperimentRow.lifecycle_stage).join(
    ExperimentRow, ExperimentRow.id == RunRow.experiment_id
)
# Built once: statements are the same on every call, only the ids vary.
_RUNS_BY_ID = _RUNS.where(RunRow.id.in_(_IDS))
_NO_TEXT, _NO_NUMBER = null().cast(String), null().cast(Float)


def _of_run(detail: Any) -> ColumnElement[bool]:
    """A detail row (tag, param, metric) of the run `RunRow` stands for, in the run's tenant."""
    return and_(detail.run_id == RunRow.id, detail.tenant == RunRow.tenant)


_RUN_DETAILS = union_all(
    select(
        TagRow.run_id,
        literal("t").label("kind"),
        TagRow.key,
        TagRow.value.label("text"),
        _NO_NUMBER.label("number"),
        false().label("is_nan"),
    )
    .join(RunRow, _of_run(TagRow))
    .where(RunRow.id.in_(_IDS)),
    select(ParamRow.run_id, literal("p"), ParamRow.key, ParamRow.value, _NO_NUMBER, false())
    .join(RunRow, _of_run(ParamRow))
    .where(RunRow.id.in_(_IDS)),
    select(
        LatestMetricRow.run_id,
        literal("m"),
        LatestMetricRow.key,
        _NO_TEXT,
        LatestMetricRow.value,
        LatestMetricRow.is_nan,
    )
    .join(RunRow, _of_run(LatestMetricRow))
    .where(RunRow.id.in_(_IDS)),
)


# PostgreSQL: a run comes with its tags, params and latest metrics as JSON aggregates beside its
# columns, so that reading runs is one query (one round trip) whatever their number.
_LATEST = LatestMetricRow
_PG_DETAIL_COLUMNS = (
    select(func.json_object_agg(TagRow.key, TagRow.value))
    .where(_of_run(TagRow))
    .scalar_subquery()
    .label("tags"),
    select(func.json_object_agg(ParamRow.key, ParamRow.value))
    .where(_of_run(ParamRow))
    .scalar_subquery()
    .label("params"),
    select(func.json_agg(func.json_build_array(_LATEST.key, _LATEST.value, _LATEST.is_nan)))
    .where(_of_run(_LATEST))
    .scalar_subquery()
    .label("metrics"),
)
_RUNS_WITH_DETAILS = _RUNS_BY_ID.add_columns(*_PG_DETAIL_COLUMNS)
# One run by id on PostgreSQL, without and with its details: every call on a run reads it
# first. The statements above for `runs.id = $1`, compiled once and run on asyncpg directly
# (its statement cache keeps them prepared): SQLAlchemy's handling of each call, expanding the
# IN list and processing the row, cost more than the query (measured: 0.7 ms against 0.5 ms per
# GetRun in the service).
_PG_RUN = {
    hydrate: str(
        _RUNS.add_columns(*details)
        .where(RunRow.id == bindparam("id", type_=String))
        .compile(dialect=postgresql.asyncpg.dialect())
    )
    for hydrate, details in ((False, ()), (True, _PG_DETAIL_COLUMNS))
}
# Metrics of a log-batch on PostgreSQL: arrays bound in binary, expanded by unnest, in one
# statement (atomic by itself) writing the history, merging the batch's blocks into the
# metric_buckets pyramid ($11 on: blocks.rows, by key, level and block) and upserting each key's
# newest point of the batch ($7: their positions, found by _newest_per_key; a sort in SQL costs
# more) in key order, so that concurrent batches on one run cannot deadlock; every row in the
# run's tenant ($8), and no upsert touches a row of another tenant. A column that is the same
# for every point (one key, $9; one timestamp, $10; no NaN) comes as an empty array instead:
# unnest pads it with NULLs, and the driver skips encoding a thousand equal elements. Public for
# the benchmark, which times it alone.
PG_LOG_METRICS = f"""
WITH points AS (
    SELECT coalesce(p.key, $9::varchar) AS key, p.step, coalesce(p.ts, $10::bigint) AS ts,
        p.value, coalesce(p.is_nan, false) AS is_nan, p.position
    FROM unnest($2::varchar[], $3::bigint[], $4::bigint[], $5::float8[], $6::bool[])
        WITH ORDINALITY AS p(key, step, ts, value, is_nan, position)
), history AS (
    INSERT INTO {metric_history.name} (tenant, run_id, key, step, "timestamp", value, is_nan)
    SELECT $8, $1, key, step, ts, value, is_nan FROM points
), pyramid AS (
    {blocks.pg_upsert("$8", "$1", 11)}
)
INSERT INTO {LatestMetricRow.__tablename__} AS latest
    (tenant, run_id, key, step, "timestamp", value, is_nan)
SELECT $8, $1, key, step, ts, value, is_nan FROM points WHERE position = ANY($7::bigint[])
ORDER BY key
ON CONFLICT (run_id, key) DO UPDATE SET
    step = excluded.step, "timestamp" = excluded."timestamp",
    value = excluded.value, is_nan = excluded.is_nan
WHERE latest.tenant = excluded.tenant AND (
    excluded.step > latest.step
    OR (excluded.step = latest.step AND excluded."timestamp" >= latest."timestamp")
)
"""
# A run and its tags on PostgreSQL in one statement (atomic by itself, one round trip, no
# transaction around it): stored only into an active experiment of the run's tenant; the
# experiment's tenant and stage come back either way (no row: no such experiment). The
# parameters are the run's columns in _RUN_COLUMNS order, then the tag keys and values.
# (Cast to the bare types: an explicit cast to varchar(n) would cut a longer value silently.)
_RUN_PARAMETERS = ", ".join(
    f"${i}::{RunRow.__table__.c[name].type.compile(dialect=postgresql.dialect()).split('(')[0]}"
    for i, name in enumerate(_RUN_COLUMNS, start=1)
)
_TAGS = len(_RUN_COLUMNS) + 1
_PG_INSERT_TAGS = f"""
, tags AS (
    INSERT INTO {TagRow.__tablename__} (tenant, run_id, key, value)
    SELECT created.tenant, created.id, tag.key, tag.value
    FROM created, unnest(${_TAGS}::varchar[], ${_TAGS + 1}::varchar[]) AS tag(key, value)
)"""
# Without tags and with them (the tag insert is left out when there are none).
_PG_CREATE_RUN = {
    with_tags: f"""
WITH experiment AS (
    SELECT tenant, lifecycle_stage FROM {ExperimentRow.__tablename__}
    WHERE id = ${_RUN_COLUMNS.index("experiment_id") + 1}::varchar
), created AS (
    INSERT INTO {RunRow.__tablename__} ({", ".join(_RUN_COLUMNS)})
    SELECT {_RUN_PARAMETERS} FROM experiment
    WHERE tenant = ${_RUN_COLUMNS.index("tenant") + 1}::varchar AND lifecycle_stage = '{ACTIVE}'
    RETURNING id, tenant
){_PG_INSERT_TAGS if with_tags else ""}
SELECT tenant, lifecycle_stage FROM experiment
"""
    for with_tags in (False, True)
}
_PG_HISTORY = (
    "SELECT step, \"timestamp\", CASE WHEN is_nan THEN 'NaN'::float8 ELSE value END"
    f" FROM {metric_history.name} WHERE run_id = $1 AND key = $2 AND tenant = $3"
    " AND step BETWEEN $4 AND $5"
    ' ORDER BY step, "timestamp", is_nan, value'
)
# Min/max buckets on PostgreSQL in one aggregate pass, no sort: each point as a float8 array
# (step, timestamp, is_nan, value), so that min/max of arrays pick each bucket's first and last
# point and, keyed by value, its lowest and highest (ties: the earliest, as the reference rule).
# Steps and timestamps must be exact in a float8 (|x| <= 2**53); other histories take the window
# statement below. Four times faster than it on a 1M-point history (0.40 s against 1.5 s).
_PG_HISTORY_BUCKETS = f"""
WITH points AS (
    SELECT (step - $6) * $7 / $8 AS bucket, is_nan,
        ARRAY[step, "timestamp", is_nan::int, value]::float8[] AS point
    FROM {metric_history.name}
    WHERE run_id = $1 AND key = $2 AND tenant = $3 AND step BETWEEN $4 AND $5
)
SELECT min(point), max(point),
    min(ARRAY[point[4], point[1], point[2]]) FILTER (WHERE NOT is_nan),
    max(ARRAY[point[4], -point[1], -point[2]]) FILTER (WHERE NOT is_nan)
FROM points GROUP BY bucket
"""
_FLOAT_EXACT = 2**53
# A step range's open ends (steps are int64).
_FIRST_STEP, _LAST_STEP = -(2**63), 2**63 - 1
_H = metric_history.c
_IN_RANGE = and_(
    _H.run_id == bindparam("run_id"),
    _H.key == bindparam("key"),
    _H.tenant == bindparam("tenant"),
    _H.step.between(bindparam("start_step"), bindparam("end_step")),
)
_HISTORY_ORDER = (_H.step, _H.timestamp, _H.is_nan, _H.value)
# How many points a range holds, its first and last step, and its widest timestamp.
_HISTORY_EXTENT = select(
    func.count(),
    func.min(_H.step),
    func.max(_H.step),
    func.max(func.abs(_H.timestamp)),
).where(_IN_RANGE)
_HISTORY_POINTS = select(_H.step, _H.timestamp, _H.value, _H.is_nan).where(_IN_RANGE)
# A range's first and last step: two probes of the (run_id, key, step) index.
_HISTORY_ENDS = select(
    select(_H.step).where(_IN_RANGE).order_by(_H.step).limit(1).scalar_subquery(),
    select(_H.step).where(_IN_RANGE).order_by(_H.step.desc()).limit(1).scalar_subquery(),
)
_B = metric_buckets.c
# The stored blocks of one level between two block indexes.
_BLOCKS = select(*(metric_buckets.c[name] for name in blocks.STORED)).where(
    _B.run_id == bindparam("run_id"),
    _B.key == bindparam("key"),
    _B.tenant == bindparam("tenant"),
    _B.level == bindparam("level"),
    _B.block.between(bindparam("first_block"), bindparam("last_block")),
)


def _bucketed_history():
    """Min/max buckets in the database (PostgreSQL and SQLite alike), the rule of
    `mlmesh_common.history.downsample`: each bucket's first, last, lowest and highest point (NaN
    never lowest or highest while the bucket has a number), so only those rows leave it."""
    bucket = (_H.step - bindparam("first")) * bindparam("buckets") // bindparam("width")

    def rank(*order: Any):
        return func.row_number().over(partition_by=bucket, order_by=order)

    ranked = (
        select(
            _H.step,
            _H.timestamp,
            _H.value,
            _H.is_nan,
            rank(*_HISTORY_ORDER).label("first"),
            rank(*(column.desc() for column in _HISTORY_ORDER)).label("last"),
            rank(_H.is_nan, _H.value, _H.step, _H.timestamp).label("low"),
            rank(_H.is_nan, _H.value.desc(), _H.step, _H.timestamp).label("high"),
        )
        .where(_IN_RANGE)
        .subquery()
    )
    r = ranked.c
    return (
        select(r.step, r.timestamp, r.value, r.is_nan)
        .where(or_(r.first == 1, r.last == 1, r.low == 1, r.high == 1))
        .order_by(r.step, r.timestamp, r.is_nan, r.value)
    )


_HISTORY_BUCKETS = _bucketed_history()


def pg_metric_arguments(
    tenant: str, run_id: str, metrics: Sequence[MetricPoint]
) -> tuple[Any, ...]:
    """PG_LOG_METRICS's parameters: the run, the points column by column, the positions (1-based,
    in key order) of each key's newest point, the run's tenant, the batch's one key and one
    timestamp (each where the points share it; their column is empty then), then the batch's
    blocks column by column."""
    keys, values, steps, timestamps = zip(*metrics, strict=True)
    nans = list(map(math.isnan, values))
    if any(nans):
        values = tuple(0.0 if nan else value for value, nan in zip(values, nans, strict=True))
    else:
        nans = []
    one_key, keys = _shared(keys)
    if one_key is not None:  # its newest point: the highest (step, timestamp, position)
        positions = [max(zip(steps, timestamps, range(1, len(steps) + 1), strict=True))[2]]
    else:
        newest = _newest_per_key(metrics)
        positions = [newest[key] + 1 for key in sorted(newest)]
    one_stamp, timestamps = _shared(timestamps)
    pyramid = tuple(zip(*blocks.rows(metrics), strict=True))
    return (
        *(run_id, keys, steps, timestamps, values, nans, positions, tenant, one_key, one_stamp),
        *pyramid,
    )


def _shared(column: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    """(the value, ()) when every element of `column` is that value, else (None, column)."""
    if column.count(column[0]) == len(column):
        return column[0], ()
    return None, column


def _newest_per_key(metrics: Sequence[MetricPoint]) -> dict[str, int]:
    """The index of each key's newest point in a batch: highest step, then timestamp, then
    position (the later of two equal points wins)."""
    newest: dict[str, tuple[int, int, int]] = {}
    for position, (key, _, step, timestamp) in enumerate(metrics):
        order = (step, timestamp, position)
        seen = newest.get(key)
        if seen is None or order > seen:
            newest[key] = order
    return {key: order[2] for key, order in newest.items()}


def _run(row: Any) -> Run:
    """A run from a mapping of its columns (a SQLAlchemy row's `_mapping`, an asyncpg record)."""
    return Run(**{name: row[name] for name in _RUN_COLUMNS}, lifecycle_stage=row["lifecycle_stage"])


def _hydrated_run(row: Any) -> Run:
    """A run read with _PG_DETAIL_COLUMNS (the driver decodes their JSON)."""
    return Run(
        **{name: row[name] for name in _RUN_COLUMNS},
        lifecycle_stage=row["lifecycle_stage"],
        tags=row["tags"] or {},
        params=row["params"] or {},
        metrics={key: math.nan if is_nan else value for key, value, is_nan in row["metrics"] or ()},
    )


def _experiment(row: Any) -> Experiment:
    return Experiment(**{name: getattr(row, name) for name in _EXPERIMENT_COLUMNS})


# Expired idempotency keys are deleted at most this often (milliseconds).
_PURGE_EVERY_MS = 60_000


@contextlib.asynccontextmanager
async def _borrowed(connection: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    yield connection


class SqlExperimentStore(ExperimentStore):
    def __init__(self, engine: AsyncEngine, *, idempotency_ttl_s: float = 24 * 3600) -> None:
        self._engine = engine
        # Reads autocommit: one round trip per query, no transaction around it.
        self._reader = reader(engine)
        self._searcher = search_reader(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        self._idempotency_ttl_ms = round(idempotency_ttl_s * 1000)
        self._purged_at = 0
        # The transaction of the idempotent call in progress in this task, if any: every write
        # and read of the call goes through it, so that the key's record commits with them.
        self._call: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
            f"experiments-store-call-{id(self)}", default=None
        )

    async def close(self) -> None:
        await self._searcher.dispose()
        await self._engine.dispose()

    async def ping(self) -> None:
        await ping(self._engine)
        if self._searcher.sync_engine.pool is not self._engine.sync_engine.pool:
            await ping(self._searcher)

    def _begin(self):
        """A transaction: the idempotent call's when one is in progress, else a new one."""
        call = self._call.get()
        return _borrowed(call) if call is not None else self._engine.begin()

    def _read(self):
        """An autocommit connection, or the idempotent call's transaction."""
        call = self._call.get()
        return _borrowed(call) if call is not None else self._reader.connect()

    @contextlib.asynccontextmanager
    async def idempotent(
        self, tenant: str, key: str, fingerprint: str
    ) -> AsyncIterator[IdempotentCall]:
        now = time.time_ns() // 1_000_000
        expired = now - self._idempotency_ttl_ms
        if now - self._purged_at > _PURGE_EVERY_MS:
            self._purged_at = now
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < expired)
                )
        mine = and_(IdempotencyKeyRow.tenant == tenant, IdempotencyKeyRow.key == key)
        async with self._engine.begin() as conn:
            # A concurrent call with the same key waits here until the first one commits (or
            # rolls back: then this one runs).
            claimed = await conn.execute(
                self._insert(IdempotencyKeyRow)
                .values(
                    tenant=tenant, key=key, fingerprint=fingerprint, response=b"", created_at=now
                )
                .on_conflict_do_nothing(index_elements=["tenant", "key"])
                .returning(IdempotencyKeyRow.key)
            )
            if claimed.first() is None:
                first = (
                    await conn.execute(
                        select(
                            IdempotencyKeyRow.fingerprint,
                            IdempotencyKeyRow.response,
                            IdempotencyKeyRow.created_at,
                        ).where(mine)
                    )
                ).one()
                if first.created_at >= expired:
                    if first.fingerprint != fingerprint:
                        raise key_reused(key)
                    yield IdempotentCall(stored=first.response)
                    return
                await conn.execute(
                    update(IdempotencyKeyRow)
                    .where(mine)
                    .values(fingerprint=fingerprint, response=b"", created_at=now)
                )
            call = IdempotentCall()
            token = self._call.set(conn)
            try:
                yield call
            finally:
                self._call.reset(token)
            if call.response is None:
                raise RuntimeError("an idempotent call ended without its response")
            await conn.execute(update(IdempotencyKeyRow).where(mine).values(response=call.response))

    # --- experiments ---------------------------------------------------------------------

    async def create_experiment(self, experiment: Experiment) -> None:
        values = {name: getattr(experiment, name) for name in _EXPERIMENT_COLUMNS}
        try:
            async with self._begin() as conn:
                await conn.execute(insert(ExperimentRow).values(values))
        except IntegrityError as exc:
            raise _name_taken(experiment.name) from exc

    async def get_experiments(self, ids: Sequence[str]) -> dict[str, Experiment]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(ExperimentRow.__table__).where(ExperimentRow.id.in_(ids))
            )
            return {row.id: _experiment(row) for row in rows}

    async def list_experiments(self, query: ExperimentQuery) -> tuple[list[Experiment], int]:
        table = ExperimentRow.__table__
        conditions = [ExperimentRow.tenant == query.tenant]
        if query.stage != "all":
            conditions.append(ExperimentRow.lifecycle_stage == query.stage)
        if query.strategy_id:
            conditions.append(ExperimentRow.strategy_id == query.strategy_id)
        if query.search:
            escaped = query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(ExperimentRow.name.ilike(f"%{escaped}%", escape="\\"))
        async with self._read() as conn:
            total = await conn.scalar(select(func.count()).select_from(table).where(*conditions))
            rows = await conn.execute(
                select(table)
                .where(*conditions)
                .order_by(ExperimentRow.created_at.desc(), ExperimentRow.id.desc())
                .offset(query.offset)
                .limit(query.limit)
            )
            return [_experiment(row) for row in rows], total or 0

    async def update_experiment(self, experiment_id: str, changes: dict[str, Any]) -> None:
        try:
            async with self._begin() as conn:
                await conn.execute(
                    update(ExperimentRow).where(ExperimentRow.id == experiment_id).values(changes)
                )
        except IntegrityError as exc:
            raise _name_taken(changes.get("name", "")) from exc

    # --- runs ----------------------------------------------------------------------------

    async def create_run(self, run: Run) -> ExperimentState | None:
        if self._postgres:
            async with self._read() as conn, driver_connection(conn) as raw:
                columns = [getattr(run, name) for name in _RUN_COLUMNS]
                tags = [list(run.tags), list(run.tags.values())] if run.tags else []
                record = await raw.fetchrow(_PG_CREATE_RUN[bool(tags)], *columns, *tags)
            return None if record is None else ExperimentState(*record)
        async with self._begin() as conn:
            found = (
                await conn.execute(
                    select(ExperimentRow.tenant, ExperimentRow.lifecycle_stage).where(
                        ExperimentRow.id == run.experiment_id
                    )
                )
            ).first()
            if found is None:
                return None
            state = ExperimentState(*found)
            if state.tenant != run.tenant or state.lifecycle_stage != ACTIVE:
                return state
            await conn.execute(insert(RunRow).values({n: getattr(run, n) for n in _RUN_COLUMNS}))
            if run.tags:
                await conn.execute(
                    insert(TagRow),
                    [
                        {"tenant": run.tenant, "run_id": run.id, "key": k, "value": v}
                        for k, v in run.tags.items()
                    ],
                )
            return state

    async def get_runs(self, ids: Sequence[str], *, hydrate: bool = True) -> dict[str, Run]:
        if not ids:
            return {}
        async with self._read() as conn:
            if self._postgres and len(ids) == 1:
                async with driver_connection(conn) as raw:
                    record = await raw.fetchrow(_PG_RUN[hydrate], ids[0])
                if record is None:
                    return {}
                return {record["id"]: (_hydrated_run if hydrate else _run)(record)}
            if hydrate and self._postgres:
                rows = await conn.execute(_RUNS_WITH_DETAILS, {"ids": list(ids)})
                return {row.id: _hydrated_run(row._mapping) for row in rows}
            rows = await conn.execute(_RUNS_BY_ID, {"ids": list(ids)})
            runs = {row.id: _run(row._mapping) for row in rows}
            if hydrate:
                await self._hydrate(conn, runs)
            return runs

    async def _hydrate(self, conn: AsyncConnection, runs: dict[str, Run]) -> None:
        """Tags, params and latest metrics of `runs` (SQLite): one query, whatever their
        number."""
        if not runs:
            return
        for row in await conn.execute(_RUN_DETAILS, {"ids": list(runs)}):
            run = runs[row.run_id]
            if row.kind == "t":
                run.tags[row.key] = row.text
            elif row.kind == "p":
                run.params[row.key] = row.text
            else:
                run.metrics[row.key] = math.nan if row.is_nan else row.number

    async def list_runs(self, query: RunQuery) -> tuple[list[Run], int]:
        run = RunRow.__table__.c  # Core columns: cheaper to build conditions on than the ORM's
        conditions = [run.tenant == query.tenant]
        if query.experiment_id:
            conditions.append(run.experiment_id == query.experiment_id)
        if query.status:
            conditions.append(run.status == query.status)
        conditions += [search.condition(clause) for clause in query.clauses]
        # PostgreSQL: each listed run's details come with it (JSON aggregates), one round trip.
        details = _PG_DETAIL_COLUMNS if self._postgres else ()
        page = (
            _RUNS.add_columns(*details)
            .where(*conditions)
            .order_by(
                *(search.order(sort) for sort in query.order),
                run.start_time.desc(),
                run.id.desc(),
            )
            .offset(query.offset)
            .limit(query.limit)
        )

        async def total() -> int:
            count = select(func.count()).select_from(RunRow).where(*conditions)
            async with self._searcher.connect() as conn:
                return await conn.scalar(count) or 0

        async def runs() -> list[Run]:
            async with self._searcher.connect() as conn:
                rows = await conn.execute(page)
                if self._postgres:
                    return [_hydrated_run(row._mapping) for row in rows]
                found = {row.id: _run(row._mapping) for row in rows}
                await self._hydrate(conn, found)
                return list(found.values())

        if not query.count:
            return await runs(), 0
        # On two connections at once: the count and the page are separate plans (a window
        # count would cost the page its early stop at LIMIT).
        counted, listed = await asyncio.gather(total(), runs())
        return listed, counted

    async def log_batch(self, tenant, run_id, metrics, params, tags) -> None:
        if self._postgres and not tags and not params:
            # Metrics alone are one statement on PostgreSQL, atomic by itself: no transaction
            # round trips around it; run on asyncpg directly (its statement cache keeps it
            # prepared), as SQLAlchemy's cursor adaptation is a large share of a one-point
            # log-metric. (Not inside `_begin()`: SQLAlchemy opens its transaction on its own
            # first statement, so a driver statement first would run outside it.)
            if metrics:
                arguments = pg_metric_arguments(tenant, run_id, metrics)
                async with self._read() as conn, driver_connection(conn) as raw:
                    await raw.execute(PG_LOG_METRICS, *arguments)
            return
        async with self._begin() as conn:
            if metrics:
                await self._log_metrics(conn, tenant, run_id, metrics)
            if tags:
                statement = self._insert(TagRow).values(
                    [
                        {"tenant": tenant, "run_id": run_id, "key": k, "value": tags[k]}
                        for k in sorted(tags)
                    ]
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=["run_id", "key"],
                        set_={"value": statement.excluded.value},
                        where=TagRow.tenant == statement.excluded.tenant,
                    )
                )
            # Last: a param conflict found here rolls back everything written above.
            if params:
                await self._log_params(conn, tenant, run_id, params)

    async def _log_params(
        self, conn: AsyncConnection, tenant: str, run_id: str, params: dict[str, str]
    ) -> None:
        # Insert what is new, then compare everything: a concurrent writer of another value
        # is caught too, and the exception rolls the whole batch back.
        await conn.execute(
            self._insert(ParamRow)
            .values(
                [
                    {"tenant": tenant, "run_id": run_id, "key": k, "value": params[k]}
                    for k in sorted(params)
                ]
            )
            .on_conflict_do_nothing(index_elements=["run_id", "key"])
        )
        stored = await conn.execute(
            select(ParamRow.key, ParamRow.value).where(
                ParamRow.run_id == run_id,
                ParamRow.tenant == tenant,
                ParamRow.key.in_(list(params)),
            )
        )
        _check_params(params, stored)

    async def _log_metrics(
        self, conn: AsyncConnection, tenant: str, run_id: str, metrics: Sequence[MetricPoint]
    ) -> None:
        if not metrics:
            return
        if self._postgres:
            arguments = pg_metric_arguments(tenant, run_id, metrics)
            await conn.exec_driver_sql(PG_LOG_METRICS, arguments)
            return
        rows = [
            {
                "tenant": tenant,
                "run_id": run_id,
                "key": point.key,
                "step": point.step,
                "timestamp": point.timestamp,
                "value": 0.0 if point.is_nan else point.value,
                "is_nan": point.is_nan,
            }
            for point in metrics
        ]
        newest = _newest_per_key(metrics)
        # Upserts lock rows in key order, so concurrent batches on one run cannot deadlock.
        statement = self._insert(LatestMetricRow).values([rows[newest[k]] for k in sorted(newest)])
        newer = statement.excluded
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["run_id", "key"],
                set_={
                    "step": newer.step,
                    "timestamp": newer.timestamp,
                    "value": newer.value,
                    "is_nan": newer.is_nan,
                },
                where=and_(
                    LatestMetricRow.tenant == newer.tenant,
                    or_(
                        newer.step > LatestMetricRow.step,
                        and_(
                            newer.step == LatestMetricRow.step,
                            newer.timestamp >= LatestMetricRow.timestamp,
                        ),
                    ),
                ),
            )
        )
        # One multi-row INSERT per chunk, not a statement per point.
        await conn.execute(insert(metric_history), rows)
        await conn.exec_driver_sql(
            blocks.SQLITE_UPSERT, [(tenant, run_id, *row) for row in blocks.rows(metrics)]
        )

    async def end_run(self, run_id: str, status: str, end_time: int) -> bool:
        async with self._begin() as conn:
            result = await conn.execute(
                update(RunRow)
                .where(RunRow.id == run_id, RunRow.status.in_(("RUNNING", "SCHEDULED")))
                .values(status=status, end_time=end_time)
            )
            return result.rowcount == 1

    async def metric_history(
        self, tenant: str, run_id: str, key: str, query: HistoryQuery
    ) -> tuple[list[HistoryPoint], int]:
        where = {
            "run_id": run_id,
            "key": key,
            "tenant": tenant,
            "start_step": _FIRST_STEP if query.start_step is None else query.start_step,
            "end_step": _LAST_STEP if query.end_step is None else query.end_step,
        }
        async with self._read() as conn:
            if query.max_points:
                first, last = (await conn.execute(_HISTORY_ENDS, where)).one()
                if first is None:
                    return [], 0
                width = downsampling.block_width(first, last, query.max_points)
                if width > 1:
                    found = await self._from_blocks(conn, where, first, last, width, query)
                    if found is not None:
                        return found
            total, first, last, widest = (await conn.execute(_HISTORY_EXTENT, where)).one()
            if not total:
                return [], 0
            if query.max_points == 0 or total <= query.max_points:
                return await self._whole_history(conn, where), total
            # Bucketed in the database: a million-point history never leaves it whole.
            buckets = downsampling.buckets(query.max_points)
            width = last - first + 1
            exact = max(abs(first), abs(last), widest) <= _FLOAT_EXACT
            if self._postgres and exact:
                points = await self._pg_buckets(conn, where, first, buckets, width)
            else:
                rows = await conn.execute(
                    _HISTORY_BUCKETS, {**where, "first": first, "buckets": buckets, "width": width}
                )
                points = [
                    HistoryPoint(step, timestamp, math.nan if is_nan else value)
                    for step, timestamp, value, is_nan in rows
                ]
            # Below 4 points the one bucket's extremes come first (the rule of downsample).
            return downsampling.downsample(points, query.max_points), total

    async def _from_blocks(
        self,
        conn: AsyncConnection,
        where: dict[str, Any],
        first: int,
        last: int,
        width: int,
        query: HistoryQuery,
    ) -> tuple[list[HistoryPoint], int] | None:
        """A range spanning many blocks from the metric_buckets pyramid: the stored blocks that
        lie wholly in the range, and the points of the (at most two) blocks at its ends that
        stick out of it. None when the range holds max_points points or fewer (they are all
        returned, read as points)."""
        start, end = where["start_step"], where["end_step"]
        edges = {first // width, last // width}
        inner = [b for b in edges if b * width >= start and (b + 1) * width - 1 <= end]
        first_inner = first // width + (first // width not in inner)
        last_inner = last // width - (last // width not in inner)
        rows = (
            await conn.execute(
                _BLOCKS,
                {
                    **where,
                    "level": blocks.level_of(width),
                    "first_block": first_inner,
                    "last_block": last_inner,
                },
            )
        ).all()
        found = [blocks.stored(row) for row in rows]
        for edge in sorted(edges - set(inner)):
            part = {
                **where,
                "start_step": max(start, edge * width),
                "end_step": min(end, (edge + 1) * width - 1),
            }
            for step, timestamp, value, is_nan in await conn.execute(_HISTORY_POINTS, part):
                found.append(blocks.single(edge, (step, timestamp, bool(is_nan), value)))
        total = sum(block[1] for block in found)
        if total <= query.max_points:
            return None
        count = downsampling.buckets(query.max_points)
        points = blocks.bucketed(found, first, last, count, width)
        # Below 4 points the one bucket's extremes come first (the rule of downsample).
        return downsampling.downsample(points, query.max_points, block=width), total

    async def _pg_buckets(
        self, conn: AsyncConnection, where: dict[str, Any], first: int, buckets: int, width: int
    ) -> list[HistoryPoint]:
        async with driver_connection(conn) as raw:
            rows = await raw.fetch(
                _PG_HISTORY_BUCKETS,
                where["run_id"],
                where["key"],
                where["tenant"],
                where["start_step"],
                where["end_step"],
                first,
                buckets,
                width,
            )
        # (step, timestamp, is_nan, value) of every pick; a point picked twice counts once.
        picked: set[tuple[float, ...]] = set()
        for earliest, latest, low, high in rows:
            picked.update((tuple(earliest), tuple(latest)))
            if low is not None:
                picked.add((low[1], low[2], 0.0, low[0]))
            if high is not None:
                picked.add((-high[1], -high[2], 0.0, high[0]))
        return [
            HistoryPoint(int(step), int(timestamp), math.nan if is_nan else value)
            for step, timestamp, is_nan, value in sorted(picked)
        ]

    async def _whole_history(
        self, conn: AsyncConnection, where: dict[str, Any]
    ) -> list[HistoryPoint]:
        if self._postgres:
            # asyncpg directly (its statement cache prepares this once per connection):
            # SQLAlchemy's per-row result processing costs more than the query.
            async with driver_connection(conn) as raw:
                rows = await raw.fetch(
                    _PG_HISTORY,
                    where["run_id"],
                    where["key"],
                    where["tenant"],
                    where["start_step"],
                    where["end_step"],
                )
            return list(map(HistoryPoint._make, rows))
        rows = await conn.execute(_HISTORY_POINTS.order_by(*_HISTORY_ORDER), where)
        return [
            HistoryPoint(step, timestamp, math.nan if is_nan else value)
            for step, timestamp, value, is_nan in rows
        ]

    # --- artifacts -----------------------------------------------------------------------

    async def record_artifact(
        self, tenant: str, run_id: str, artifact: StoredArtifactRecord, at: int
    ) -> None:
        values = {
            "tenant": tenant,
            "run_id": run_id,
            "path": artifact.path,
            "size_bytes": artifact.size_bytes,
            "sha256": artifact.sha256,
            "uri": artifact.uri,
            "created_at": at,
        }
        statement = self._insert(ArtifactRow).values(values)
        async with self._begin() as conn:
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["run_id", "path"],
                    set_={
                        k: statement.excluded[k]
                        for k in ("size_bytes", "sha256", "uri", "created_at")
                    },
                    where=ArtifactRow.tenant == statement.excluded.tenant,
                )
            )

    async def artifact_records(self, tenant: str, run_id: str) -> dict[str, StoredArtifactRecord]:
        async with self._read() as conn:
            mine = and_(ArtifactRow.run_id == run_id, ArtifactRow.tenant == tenant)
            rows = await conn.execute(select(ArtifactRow).where(mine))
            return {
                row.path: StoredArtifactRecord(row.path, row.size_bytes, row.sha256, row.uri)
                for row in rows
            }


def _check_params(params: dict[str, str], stored) -> None:
    """Params are immutable: any stored value other than the batch's rejects the batch."""
    changed = sorted(key for key, value in stored if value != params[key])
    if changed:
        raise InvalidArgument(
            f"params are immutable; already logged with another value: {', '.join(changed)}",
            reason="PARAM_ALREADY_LOGGED",
            metadata={"keys": ",".join(changed)},
        )


def _name_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"an active experiment named {name!r} already exists",
        reason="EXPERIMENT_NAME_TAKEN",
        metadata={"name": name},
    )
