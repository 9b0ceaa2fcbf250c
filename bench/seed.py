"""Untimed data for the search benchmark: the same N runs (a `bucket` tag and a `score` metric)
in MLflow, FastTrackML and mlmesh."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy
from mlflow.entities import LifecycleStage, RunStatus, SourceType
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from bench.clients import Point, Tracker

BUCKETS = "abcde"
# Concurrent seeding requests: enough to keep the service and PostgreSQL busy on 2 cores.
SEED_THREADS = 8


@dataclass(frozen=True)
class SeedRun:
    name: str
    bucket: str
    score: float


def search_runs(count: int) -> list[SeedRun]:
    """Buckets in turn and scores spread over [0, 1), so a bucket + score filter matches a
    predictable ~14% of the runs (more than one page of 100)."""
    return [
        SeedRun(f"seed-{i}", BUCKETS[i % len(BUCKETS)], (i * 7919 % 1000) / 1000)
        for i in range(count)
    ]


def log_run_details(tracker: Tracker, run_id: str) -> None:
    """A run as researchers log them, for the get-run benchmarks: 20 params, 20 tags and 50
    metrics."""
    now = _now_ms()
    tracker.log_details(
        run_id,
        [Point(f"metric_{i}", i / 10, 0, now) for i in range(50)],
        {f"param_{i}": str(i) for i in range(20)},
        {f"tag_{i}": f"value-{i}" for i in range(20)},
    )


def seed_api(make_tracker: Callable[[], Tracker], experiment_id: str, runs: list[SeedRun]) -> None:
    """Through a system's public API, several requests in flight, a client per thread."""
    now = _now_ms()
    local = threading.local()
    made: list[Tracker] = []

    def seed(run: SeedRun) -> None:
        if not hasattr(local, "tracker"):
            local.tracker = make_tracker()
            made.append(local.tracker)
        tracker = local.tracker
        run_id = tracker.create_run(experiment_id, run.name, {"bucket": run.bucket})
        tracker.log_batch(tracker.prepare_batch(run_id, [Point("score", run.score, 0, now)]))

    try:
        with ThreadPoolExecutor(SEED_THREADS) as pool:
            list(pool.map(seed, runs))
    finally:
        for tracker in made:
            close = getattr(tracker, "close", None)
            if close is not None:
                close()


def seed_mlflow(database_url: str, experiment_id: str, runs: list[SeedRun]) -> None:
    """Straight into MLflow's database through MLflow's own table models, the rows its
    create_run and log_batch write: through its one-worker REST API, 5,000 runs take minutes.
    The server keeps no cache of runs, so it serves these like any others."""
    now = _now_ms()
    rows = [_mlflow_rows(run, experiment_id, now - i) for i, run in enumerate(runs)]
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:
            for model, index in (
                (SqlRun, 0),
                (SqlTag, 1),
                (SqlMetric, 2),
                (SqlLatestMetric, 2),
            ):
                values = [row for run_rows in rows for row in run_rows[index]]
                connection.execute(sqlalchemy.insert(model.__table__), values)
    finally:
        engine.dispose()


def settle(database_urls: list[str]) -> None:
    """VACUUM ANALYZE: freshly written tables have no planner statistics until autovacuum
    reaches them, and plans on such tables say little about a running system. Both systems
    get it, and autovacuum no longer fires in the middle of the timed calls."""
    for url in database_urls:
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("VACUUM ANALYZE"))
        finally:
            engine.dispose()


def _mlflow_rows(
    run: SeedRun, experiment_id: str, start_time: int
) -> tuple[list[dict], list[dict], list[dict]]:
    """(run, tags, metric) rows of one run, as MLflow's SqlAlchemyStore fills them."""
    run_uuid = uuid.uuid4().hex
    run_row = {
        "run_uuid": run_uuid,
        "name": run.name,
        "experiment_id": int(experiment_id),
        "source_type": SourceType.to_string(SourceType.UNKNOWN),
        "source_name": "",
        "entry_point_name": "",
        "user_id": "bench",
        "status": RunStatus.to_string(RunStatus.RUNNING),
        "start_time": start_time,
        "end_time": None,
        "deleted_time": None,
        "source_version": "",
        "lifecycle_stage": LifecycleStage.ACTIVE,
        "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_uuid}/artifacts",
    }
    tags = [
        {"run_uuid": run_uuid, "key": "bucket", "value": run.bucket},
        {"run_uuid": run_uuid, "key": MLFLOW_RUN_NAME, "value": run.name},
    ]
    metric = {
        "run_uuid": run_uuid,
        "key": "score",
        "value": run.score,
        "timestamp": start_time,
        "step": 0,
        "is_nan": False,
    }
    return [run_row], tags, [metric]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
