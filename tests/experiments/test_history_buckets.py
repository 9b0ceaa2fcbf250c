"""Min/max buckets in the database: a 1,000,000-point history with one spike, stored in SQLite
and PostgreSQL (its block pyramid backfilled by the migration), read with max_points=1000 and a
zoomed step range. The database's buckets must equal the reference rule
(mlmesh_common.history.downsample, whole blocks where the range spans many) applied to the whole
history; and on random histories logged through the store, every answer must equal a full-scan
recomputation written here."""

from __future__ import annotations

import math
import random
import uuid

import pytest
from sqlalchemy import text

from mlmesh_common import history
from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import create_engine
from mlmesh_common.errors import InvalidArgument
from mlmesh_experiments.entities import MetricPoint
from mlmesh_experiments.service import ExperimentsService
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
    # The points go in by SQL before the pyramid's revision, whose migration then backfills it:
    # a million through log-batch would only slow the test down.
    await migrate(engine, "0004")
    run_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            text(GENERATE[request.param]), {"tenant": TENANT, "run_id": run_id, "last": N - 1}
        )
    await migrate(engine)
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
    # Two blocks of 1,024 steps per bucket at least: buckets of whole blocks.
    assert history.block_width(0, N - 1, 1000) == 1024
    assert nan_aware(points) == nan_aware(history.downsample(whole, 1000, block=1024))


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
    block = history.block_width(SPIKE - 5000, SPIKE + 4999, 100)
    assert block == 64
    assert nan_aware(points) == nan_aware(history.downsample(whole, 100, block=block))


async def logged_run(store: SqlExperimentStore, tmp_path) -> tuple[ExperimentsService, str]:
    service = ExperimentsService(store, LocalArtifactStore(tmp_path))
    experiment = await service.create_experiment(TENANT, {"name": f"h-{uuid.uuid4().hex}"})
    return service, (await service.create_run(TENANT, experiment.id)).id


async def test_steps_beyond_float_precision_are_bucketed_exactly(spiky, tmp_path):
    """Steps past 2**53 (not exact in a float8) take the window statement on PostgreSQL too."""
    store, _ = spiky
    service, run_id = await logged_run(store, tmp_path)
    base = 2**60
    metrics = [MetricPoint("huge", math.sin(i), base + 3 * i, i) for i in range(60)]
    await service.log_batch(TENANT, run_id, metrics=metrics)
    points, total = await store.metric_history(TENANT, run_id, "huge", HistoryQuery(8))
    whole, _ = await store.metric_history(TENANT, run_id, "huge", HistoryQuery())
    assert total == 60 and [p.step for p in whole] == [base + 3 * i for i in range(60)]
    block = history.block_width(base, base + 177, 8)
    assert points == history.downsample(whole, 8, block=block) and len(points) <= 8


def full_scan(points: list[MetricPoint], max_points: int, start, end) -> tuple[list, int]:
    """The answer recomputed from every point, without the store or mlmesh_common.history's
    downsample: the points of the range in history order; past max_points, per bucket of whole
    blocks its first, last, lowest and highest number (the earliest of ties)."""
    low_end = -math.inf if start is None else start
    high_end = math.inf if end is None else end
    ordered = sorted(
        (p.step, p.timestamp, math.isnan(p.value), 0.0 if math.isnan(p.value) else p.value)
        for p in points
        if low_end <= p.step <= high_end
    )
    if max_points == 0 or len(ordered) <= max_points:
        return ordered, len(ordered)
    first, last = ordered[0][0], ordered[-1][0]
    count = max(1, max_points // 4)
    width = history.block_width(first, last, max_points)
    buckets: dict[int, list] = {}
    for point in ordered:
        block_start = max(first, point[0] - point[0] % width)
        buckets.setdefault((block_start - first) * count // (last - first + 1), []).append(point)
    kept = set()
    for members in buckets.values():
        numbers = [p for p in members if not p[2] and math.isfinite(p[3])]
        low = min(numbers, key=lambda p: (p[3], p[0], p[1])) if numbers else members[0]
        high = min(numbers, key=lambda p: (-p[3], p[0], p[1])) if numbers else members[0]
        picks = [members[0], members[-1], low, high]
        if max_points < 4:  # one bucket: its extremes first, then the last, then the first
            picks = list(dict.fromkeys([low, high, members[-1], members[0]]))[:max_points]
        kept.update(picks)
    return sorted(kept), len(ordered)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_pyramid_answers_as_a_full_scan_of_random_histories(request, backend, tmp_path):
    """Random histories logged in random batches (unordered steps, negative steps, several
    points per step, NaN and infinities, two keys), read with random ranges and budgets from the
    block pyramid: every answer equals the full-scan recomputation."""
    rng = random.Random(20261201)
    engine = create_engine(backend_url(request, backend, tmp_path, "pyramid"))
    await migrate(engine)
    store = SqlExperimentStore(engine)
    service, run_id = await logged_run(store, tmp_path)
    values = [0.25, 0.5, -1.0, math.nan, math.inf, -math.inf]
    logged: list[MetricPoint] = []
    for _ in range(12):
        low = rng.randrange(-300_000, 200_000)
        metrics = [
            MetricPoint(
                rng.choice(("loss", "pnl")),
                rng.choice(values) if rng.random() < 0.1 else rng.gauss(0, 1),
                rng.randrange(low, low + rng.choice((2_000, 100_000))),
                rng.randrange(1, 1_000),  # 0 would mean "now"
            )
            for _ in range(rng.randrange(1, 1000))
        ]
        await service.log_batch(TENANT, run_id, metrics=metrics)
        logged += metrics
    blocked = 0
    for _ in range(60):
        key = rng.choice(("loss", "pnl"))
        start = rng.choice((None, rng.randrange(-300_000, 300_000)))
        end = rng.choice((None, rng.randrange(start or -300_000, 310_000)))
        max_points = rng.choice((1, 2, 3, 4, 9, 40, 100, 1000))
        mine = [p for p in logged if p.key == key]
        expected, total = full_scan(mine, max_points, start, end)
        points, counted = await store.metric_history(
            TENANT, run_id, key, HistoryQuery(max_points, start, end)
        )
        assert counted == total
        assert [
            (p.step, p.timestamp, math.isnan(p.value), 0.0 if math.isnan(p.value) else p.value)
            for p in points
        ] == expected, (key, start, end, max_points)
        if (
            total > max_points
            and history.block_width(expected[0][0], expected[-1][0], max_points) > 1
        ):
            blocked += 1
    assert blocked > 20  # most reads went through the pyramid
    await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_refused_batch_leaves_no_blocks(request, backend, tmp_path):
    """The blocks are written in the batch's transaction: a batch refused for a param conflict
    (checked last, after the metrics went in) leaves neither points nor blocks."""
    engine = create_engine(backend_url(request, backend, tmp_path, "refused"))
    await migrate(engine)
    store = SqlExperimentStore(engine)
    service, run_id = await logged_run(store, tmp_path)
    await service.log_batch(TENANT, run_id, params=[("lr", "0.1")])
    metrics = [MetricPoint("loss", 1 / (s + 1), s, 1 + s) for s in range(900)]
    with pytest.raises(InvalidArgument):
        await service.log_batch(TENANT, run_id, metrics=metrics, params=[("lr", "0.2")])
    async with engine.connect() as conn:
        for table in ("metric_buckets", "metric_history"):
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
    await service.log_batch(TENANT, run_id, metrics=metrics)
    async with engine.connect() as conn:
        blocks = await conn.scalar(text("SELECT count(*) FROM metric_buckets"))
    assert blocks == 15 + 7  # 900 steps: 15 blocks of 64, then one per level above
    await store.close()
