"""The experiment-tracking workload, operation by operation, on every client in turn: MLflow,
then mlmesh over gRPC, then mlmesh over REST (never two at once)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bench.clients import GrpcTracker, MlflowTracker, Point, RestTracker, Tracker
from bench.cpu import CpuMeter, per_call_ms
from bench.floor import log_batch_statement
from bench.measure import Budget, Stats, sample, summarize, warm_up
from bench.seed import search_runs, seed_mlflow, seed_mlmesh, settle

CLIENTS = ("mlflow", "grpc", "rest")
BATCH_POINTS = 1_000
SEARCH_FILTER = "tags.bucket = 'c' and metrics.score > 0.3"
SEARCH_LIMIT = 100
HISTORY_KEY = "accuracy"


@dataclass(frozen=True)
class Sizes:
    label: str
    create_run: Budget
    log_batch: Budget
    log_metric: Budget
    get_run: Budget
    search: Budget
    history: Budget
    search_runs: int
    history_points: int


@dataclass(frozen=True)
class Row:
    key: str  # stable identifier the targets refer to
    title: str
    stats: dict[str, Stats]  # client -> stats
    cpu_ms: dict[str, dict[str, float]]  # client -> process group -> CPU ms per call
    # The database statement alone, where the harness times it (log-batch): bench.floor.
    floor: Stats | None = None

    @property
    def is_throughput(self) -> bool:
        return self.stats["mlflow"].points_per_s is not None


@dataclass
class Systems:
    mlflow: MlflowTracker
    grpc: GrpcTracker
    rest: RestTracker
    mlflow_database_url: str
    mlmesh_database_url: str
    meter: CpuMeter

    def trackers(self) -> dict[str, Tracker]:
        return {"mlflow": self.mlflow, "grpc": self.grpc, "rest": self.rest}

    def database_urls(self) -> list[str]:
        return [self.mlflow_database_url, self.mlmesh_database_url]


def run_workload(systems: Systems, sizes: Sizes) -> list[Row]:
    steps = (
        bench_create_run,
        bench_log_batch,
        bench_log_metric,
        bench_get_run,
        bench_search,
        bench_history,
    )
    return [step(systems, sizes) for step in steps]


def bench_create_run(systems: Systems, sizes: Sizes) -> Row:
    calls = {}
    for client, tracker in systems.trackers().items():
        experiment = tracker.create_experiment(_unique("bench-create"))
        calls[client] = _bind_create(tracker, experiment)
    return _measure(systems, "create_run", "create run (1 tag)", calls, sizes.create_run)


def _bind_create(tracker: Tracker, experiment_id: str) -> Callable[[int], object]:
    return lambda i: tracker.create_run(experiment_id, f"run-{i}", {"source": "bench"})


def bench_log_batch(systems: Systems, sizes: Sizes) -> Row:
    # Built upfront: each call logs the next 1,000 steps, as a training loop would.
    points = [
        _points("loss", i * BATCH_POINTS, BATCH_POINTS)
        for i in range(sizes.log_batch.calls_needed())
    ]
    calls = {}
    for client, tracker in systems.trackers().items():
        run_id = _new_run(tracker)
        batches = [tracker.prepare_batch(run_id, batch) for batch in points]
        calls[client] = _bind_batch(tracker, batches)
    title = f"log-batch, {BATCH_POINTS:,} points per request"
    row = _measure(systems, "log_batch", title, calls, sizes.log_batch, BATCH_POINTS)
    run_id = _new_run(systems.grpc)
    with log_batch_statement(systems.mlmesh_database_url, run_id, points) as statement:
        warm_up(statement, sizes.log_batch)
        floor = summarize(sample(statement, sizes.log_batch), BATCH_POINTS)
    print(f"  the database statement alone: {_progress(floor)}")
    return dataclasses.replace(row, floor=floor)


def _bind_batch(tracker: Tracker, batches: list[object]) -> Callable[[int], object]:
    return lambda i: tracker.log_batch(batches[i])


def bench_log_metric(systems: Systems, sizes: Sizes) -> Row:
    calls = {}
    for client, tracker in systems.trackers().items():
        calls[client] = _bind_metric(tracker, _new_run(tracker), _now_ms())
    title = "log-metric, 1 point per request"
    return _measure(systems, "log_metric", title, calls, sizes.log_metric, 1)


def _bind_metric(tracker: Tracker, run_id: str, now: int) -> Callable[[int], object]:
    return lambda i: tracker.log_metric(run_id, Point("loss", 1 / (i + 1), i, now + i))


def bench_get_run(systems: Systems, sizes: Sizes) -> Row:
    """A run as researchers log them: 20 params, 20 tags and 50 metrics to read back."""
    params = {f"param_{i}": str(i) for i in range(20)}
    tags = {f"tag_{i}": f"value-{i}" for i in range(20)}
    now = _now_ms()
    metrics = [Point(f"metric_{i}", i / 10, 0, now) for i in range(50)]
    calls = {}
    for client, tracker in systems.trackers().items():
        run_id = _new_run(tracker)
        tracker.log_details(run_id, metrics, params, tags)
        calls[client] = _bind_get(tracker, run_id)
    title = "get run (20 params, 20 tags, 50 metrics)"
    return _measure(systems, "get_run", title, calls, sizes.get_run)


def _bind_get(tracker: Tracker, run_id: str) -> Callable[[int], object]:
    return lambda i: tracker.get_run(run_id)


def bench_search(systems: Systems, sizes: Sizes) -> Row:
    runs = search_runs(sizes.search_runs)
    mlflow_experiment = systems.mlflow.create_experiment(_unique("bench-search"))
    seed_mlflow(systems.mlflow_database_url, mlflow_experiment, runs)
    mesh_experiment = systems.grpc.create_experiment(_unique("bench-search"))
    started = time.perf_counter()
    seed_mlmesh(systems.grpc, mesh_experiment, runs)
    print(f"  seeded {len(runs):,} runs in mlmesh in {time.perf_counter() - started:.0f} s")
    _check_same_matches(systems, mlflow_experiment, mesh_experiment)
    settle(systems.database_urls())
    experiments = {"mlflow": mlflow_experiment, "grpc": mesh_experiment, "rest": mesh_experiment}
    calls = {
        client: _bind_search(tracker, experiments[client], SEARCH_LIMIT)
        for client, tracker in systems.trackers().items()
    }
    title = f"search {len(runs):,} runs, tag + metric filter, {SEARCH_LIMIT} returned"
    return _measure(systems, "search", title, calls, sizes.search)


def _check_same_matches(systems: Systems, mlflow_experiment: str, mesh_experiment: str) -> None:
    """Both systems must find the same runs, or the comparison would be meaningless."""
    in_mlflow = systems.mlflow.search(mlflow_experiment, SEARCH_FILTER, 50_000)
    in_mlmesh = systems.grpc.count(mesh_experiment, SEARCH_FILTER)
    if in_mlflow != in_mlmesh or in_mlflow <= SEARCH_LIMIT:
        raise RuntimeError(f"search matches differ: MLflow {in_mlflow}, mlmesh {in_mlmesh}")
    print(f"  the search filter matches {in_mlflow:,} runs in both systems")


def _bind_search(tracker: Tracker, experiment_id: str, limit: int) -> Callable[[int], object]:
    def search(_: int) -> None:
        found = tracker.search(experiment_id, SEARCH_FILTER, limit)
        if found != limit:
            raise RuntimeError(f"search returned {found} runs, expected {limit}")

    return search


def bench_history(systems: Systems, sizes: Sizes) -> Row:
    """One metric with N points, logged in batches of 1,000 (MLflow's largest batch)."""
    mesh_run = _history_run(systems.grpc, sizes.history_points)
    run_of = {"mlflow": _history_run(systems.mlflow, sizes.history_points), "grpc": mesh_run}
    run_of["rest"] = mesh_run
    settle(systems.database_urls())
    calls = {
        client: _bind_history(tracker, run_of[client], sizes.history_points)
        for client, tracker in systems.trackers().items()
    }
    title = f"metric history, {sizes.history_points:,} points"
    return _measure(systems, "history", title, calls, sizes.history)


def _history_run(tracker: Tracker, points: int) -> str:
    run_id = _new_run(tracker)
    for offset in range(0, points, BATCH_POINTS):
        batch = _points(HISTORY_KEY, offset, min(BATCH_POINTS, points - offset))
        tracker.log_batch(tracker.prepare_batch(run_id, batch))
    return run_id


def _bind_history(tracker: Tracker, run_id: str, expected: int) -> Callable[[int], object]:
    def history(_: int) -> None:
        found = tracker.history(run_id, HISTORY_KEY)
        if found != expected:
            raise RuntimeError(f"history returned {found} points, expected {expected}")

    return history


def _measure(
    systems: Systems,
    key: str,
    title: str,
    calls: dict[str, Callable[[int], object]],
    budget: Budget,
    points_per_call: int = 0,
) -> Row:
    stats, cpu = {}, {}
    for client in CLIENTS:
        warm_up(calls[client], budget)
        before = systems.meter.snapshot()
        latencies = sample(calls[client], budget)
        cpu[client] = per_call_ms(before, systems.meter.snapshot(), len(latencies))
        stats[client] = summarize(latencies, points_per_call)
    row = Row(key, title, stats, cpu)
    print(f"{title}: " + ", ".join(f"{c} {_progress(s)}" for c, s in stats.items()))
    return row


def _progress(stats: Stats) -> str:
    text = f"p50 {stats.p50_ms:.2f} ms"
    if stats.points_per_s is not None:
        text += f" / {stats.points_per_s:,.0f} pts/s"
    return text


def _new_run(tracker: Tracker) -> str:
    experiment_id = tracker.create_experiment(_unique("bench"))
    return tracker.create_run(experiment_id, "bench", {})


def _points(key: str, first_step: int, count: int) -> list[Point]:
    now = _now_ms()
    return [Point(key, 1 / (step + 1), step, now) for step in range(first_step, first_step + count)]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
