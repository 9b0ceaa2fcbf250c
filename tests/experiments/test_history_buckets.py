"""Min/max buckets in the database: a 1,000,000-point history with one spike, stored in SQLite
and PostgreSQL, read with max_points=1000 and a zoomed step range. The database's buckets must
equal the reference rule (mlmesh_common.history.downsample) applied to the whole history."""

from __future__ import annotations

import math
import uuid

import pytest
from sqlalchemy import text

from mlmesh_common import history
from mlmesh_common.db import create_engine
from mlmesh_experiments.storage.base import HistoryQuery
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from tests.helpers.postgres import backend_url

N = 1_000_000
SPIKE = 654_321
TENANT = "t-history"
# Values in [0, 1) with repeats (ties between points), the spike far above them all, and a NaN
# every 1000 steps (stored as is_nan, value 0).
VALUE = f"CASE WHEN x = {SPIKE} THEN 1000000.0 ELSE ((x * 7919) % 10007) / 10007.0 END"
IS_NAN = "x % 1000 = 7"
GENERATE = {
    "sqlite": (
        "WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < :last) "
        'INSERT INTO metric_history (tenant, run_id, key, step, "timestamp", value, is_nan) '
        f"SELECT :tenant, :run_id, 'spiky', x, 1700000000000 + x, {VALUE}, {IS_NAN} FROM g"
    ),
    "postgresql": (
        'INSERT INTO metric_history (tenant, run_id, key, step, "timestamp", value, is_nan) '
        f"SELECT :tenant, :run_id, 'spiky', x, 1700000000000 + x, {VALUE}, {IS_NAN} "
        "FROM generate_series(0, CAST(:last AS bigint)) AS x"
    ),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def spiky(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("h")
    engine = create_engine(backend_url(request, request.param, directory, "registry"))
    await migrate(engine)
    run_id = str(uuid.uuid4())
    # The points go in by SQL: a million through log-batch would only slow the test down.
    async with engine.begin() as conn:
        await conn.execute(
            text(GENERATE[request.param]), {"tenant": TENANT, "run_id": run_id, "last": N - 1}
        )
    store = SqlExperimentStore(engine)
    yield store, run_id
    await store.close()


def nan_aware(points):
    """NaN != NaN: compare points with NaN values as a marker."""
    return [(p.step, p.timestamp, "nan" if math.isnan(p.value) else p.value) for p in points]


async def test_the_database_buckets_keep_the_spike(spiky):
    store, run_id = spiky
    points, total = await store.metric_history(
        TENANT, run_id, "spiky", HistoryQuery(max_points=1000)
    )
    assert total == N
    assert 0 < len(points) <= 1000
    assert (SPIKE, 1700000000000 + SPIKE, 1000000.0) in points
    assert points[0].step == 0 and points[-1].step == N - 1
    whole, _ = await store.metric_history(TENANT, run_id, "spiky", HistoryQuery())
    assert len(whole) == N
    assert nan_aware(points) == nan_aware(history.downsample(whole, 1000))


async def test_a_zoomed_range_at_full_resolution_then_bucketed(spiky):
    store, run_id = spiky
    around = HistoryQuery(max_points=1000, start_step=SPIKE - 300, end_step=SPIKE + 300)
    points, total = await store.metric_history(TENANT, run_id, "spiky", around)
    assert total == 601 and [p.step for p in points] == list(range(SPIKE - 300, SPIKE + 301))
    wider = HistoryQuery(max_points=100, start_step=SPIKE - 5000, end_step=SPIKE + 4999)
    points, total = await store.metric_history(TENANT, run_id, "spiky", wider)
    assert total == 10_000 and len(points) <= 100
    assert any(p.value == 1000000.0 for p in points)
    whole, _ = await store.metric_history(
        TENANT, run_id, "spiky", HistoryQuery(start_step=SPIKE - 5000, end_step=SPIKE + 4999)
    )
    assert nan_aware(points) == nan_aware(history.downsample(whole, 100))


async def test_steps_beyond_float_precision_are_bucketed_exactly(spiky):
    """Steps past 2**53 (not exact in a float8) take the window statement on PostgreSQL too."""
    store, _ = spiky
    run_id = str(uuid.uuid4())
    base = 2**60
    values = [math.sin(i) for i in range(60)]
    async with store._engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO metric_history"
                ' (tenant, run_id, key, step, "timestamp", value, is_nan)'
                " VALUES (:tenant, :run_id, 'huge', :step, :ts, :value, false)"
            ),
            [
                {"tenant": TENANT, "run_id": run_id, "step": base + 3 * i, "ts": i, "value": v}
                for i, v in enumerate(values)
            ],
        )
    points, total = await store.metric_history(TENANT, run_id, "huge", HistoryQuery(8))
    whole, _ = await store.metric_history(TENANT, run_id, "huge", HistoryQuery())
    assert total == 60 and [p.step for p in whole] == [base + 3 * i for i in range(60)]
    assert points == history.downsample(whole, 8) and len(points) <= 8
