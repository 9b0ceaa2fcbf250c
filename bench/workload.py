"""The experiment-tracking workload, operation by operation, on every client: MLflow,
FastTrackML, mlmesh over gRPC and mlmesh over REST, taking turns in rounds (never two at once)
so that drift on the machine hits all alike."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bench.clients import (
    FastTrackTracker,
    GrpcTracker,
    MlflowTracker,
    Point,
    RestTracker,
    Tracker,
)
from bench.concurrent import WRITERS, Totals, write_round, writers
from bench.cpu import GROUPS, CpuMeter, per_call_ms
from bench.floor import log_batch_statement
from bench.measure import Budget, Stats, rounds, sample, sample_span, summarize, warm_up
from bench.seed import log_run_details, search_runs, seed_api, seed_mlflow, settle

CLIENTS = ("mlflow", "fasttrack", "grpc", "rest")
# Turns each client takes at every operation (its budget cut in as many parts).
ROUNDS = 4
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
    # Seconds of writing per client (all writers at once), cut into ROUNDS turns.
    concurrent_s: float
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
    # A new client (connection) for each system: the concurrent writers take one each.
    factories: dict[str, Callable[[], Tracker]]
    mlflow_database_url: str
    fasttrack_database_url: str
    mlmesh_database_url: str
    meter: CpuMeter
    clients: dict[str, Tracker] = dataclasses.field(default_factory=dict)
    # The search benchmark's experiment in each system, for the search rows.
    search_experiments: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clients = {client: self.factories[client]() for client in CLIENTS}

    def trackers(self) -> dict[str, Tracker]:
        return self.clients

    @property
    def mlflow(self) -> MlflowTracker:
        return self.clients["mlflow"]  # type: ignore[return-value]

    @property
    def fasttrack(self) -> FastTrackTracker:
        return self.clients["fasttrack"]  # type: ignore[return-value]

    @property
    def grpc(self) -> GrpcTracker:
        return self.clients["grpc"]  # type: ignore[return-value]

    @property
    def rest(self) -> RestTracker:
        return self.clients["rest"]  # type: ignore[return-value]

    def database_urls(self) -> list[str]:
        return [self.mlflow_database_url, self.fasttrack_database_url, self.mlmesh_database_url]


def run_workload(systems: Systems, sizes: Sizes, only: frozenset[str] = frozenset()) -> list[Row]:
    """Every operation, or those of `only` (row keys, see OPERATIONS): a shorter run to measure
    a change by; "search_total" searches the experiment the "search" step seeds."""
    if "search_total" in only:
        only |= {"search"}
    return [step(systems, sizes) for key, step in OPERATIONS.items() if not only or key in only]


def bench_create_run(systems: Systems, sizes: Sizes) -> Row:
    calls = {}
    for client, tracker in systems.trackers().items():
        experiment = tracker.create_experiment(_unique("bench-create"))
        calls[client] = _bind_create(tracker, experiment)
    return _measure(systems, "create_run", "create run (1 tag)", calls, sizes.create_run)


def _bind_create(tracker: Tracker, experiment_id: str) -> Callable[[int], object]:
    return lambda i: tracker.create_run(experiment_id, f"run-{i}", {"source": "bench"})


def _batches(sizes: Sizes) -> list[list[Point]]:
    # Built upfront: each call logs the next 1,000 steps, as a training loop would.
    return [
        _points("loss", i * BATCH_POINTS, BATCH_POINTS)
        for i in range(sizes.log_batch.calls_needed())
    ]


def _batch_calls(systems: Systems, points: list[list[Point]], series: bool) -> dict:
    calls = {}
    for client, tracker in systems.trackers().items():
        run_id = _new_run(tracker)
        prepare = tracker.prepare_series if series else tracker.prepare_batch
        calls[client] = _bind_batch(tracker, [prepare(run_id, batch) for batch in points])
    return calls


def bench_log_batch(systems: Systems, sizes: Sizes) -> Row:
    points = _batches(sizes)
    calls = _batch_calls(systems, points, series=False)
    title = f"log-batch, {BATCH_POINTS:,} points per request"
    row = _measure(systems, "log_batch", title, calls, sizes.log_batch, BATCH_POINTS)
    run_id = _new_run(systems.grpc)
    with log_batch_statement(systems.mlmesh_database_url, run_id, points) as statement:
        warm_up(statement, sizes.log_batch)
        floor = summarize(sample(statement, sizes.log_batch), BATCH_POINTS)
    print(f"  the database statement alone: {_progress(floor)}")
    return dataclasses.replace(row, floor=floor)


def bench_log_batch_series(systems: Systems, sizes: Sizes) -> Row:
    """The same batches, mlmesh's as one series (columns); the peers' APIs have no such shape
    and send theirs as in the row above."""
    calls = _batch_calls(systems, _batches(sizes), series=True)
    title = f"log-batch, {BATCH_POINTS:,} points per request, mlmesh as one series"
    return _measure(systems, "log_batch_series", title, calls, sizes.log_batch, BATCH_POINTS)


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
    """A run as researchers log them (`log_run_details`) to read back."""
    calls = {}
    for client, tracker in systems.trackers().items():
        run_id = _new_run(tracker)
        log_run_details(tracker, run_id)
        calls[client] = _bind_get(tracker, run_id)
    title = "get run (20 params, 20 tags, 50 metrics)"
    return _measure(systems, "get_run", title, calls, sizes.get_run)


def _bind_get(tracker: Tracker, run_id: str) -> Callable[[int], object]:
    return lambda i: tracker.get_run(run_id)


def bench_search(systems: Systems, sizes: Sizes) -> Row:
    runs = search_runs(sizes.search_runs)
    mlflow_experiment = systems.mlflow.create_experiment(_unique("bench-search"))
    seed_mlflow(systems.mlflow_database_url, mlflow_experiment, runs)
    experiments = {"mlflow": mlflow_experiment}
    for client in ("fasttrack", "grpc"):
        experiments[client] = systems.clients[client].create_experiment(_unique("bench-search"))
        started = time.perf_counter()
        seed_api(systems.factories[client], experiments[client], runs)
        print(f"  seeded {len(runs):,} runs in {client} in {time.perf_counter() - started:.0f} s")
    experiments["rest"] = experiments["grpc"]
    _check_same_matches(systems, experiments)
    settle(systems.database_urls())
    systems.search_experiments = experiments
    calls = {
        client: _bind_search(tracker, experiments[client], SEARCH_LIMIT)
        for client, tracker in systems.trackers().items()
    }
    title = f"search {len(runs):,} runs, tag + metric filter, {SEARCH_LIMIT} returned"
    return _measure(systems, "search", title, calls, sizes.search)


def bench_search_total(systems: Systems, sizes: Sizes) -> Row:
    """The same search, mlmesh also counting every match for the exact `total` (the
    contract's default); MLflow and FastTrackML have no total and run the same search."""
    calls = {
        client: _bind_search(tracker, systems.search_experiments[client], SEARCH_LIMIT, True)
        for client, tracker in systems.trackers().items()
    }
    title = f"search {sizes.search_runs:,} runs as above, mlmesh with the exact total"
    return _measure(systems, "search_total", title, calls, sizes.search)


def _check_same_matches(systems: Systems, experiments: dict[str, str]) -> None:
    """Every system must find the same runs, or the comparison would be meaningless."""
    found = {
        "mlflow": systems.mlflow.search(experiments["mlflow"], SEARCH_FILTER, 50_000),
        "fasttrack": systems.fasttrack.count(experiments["fasttrack"], SEARCH_FILTER),
        "mlmesh": systems.grpc.count(experiments["grpc"], SEARCH_FILTER),
    }
    if len(set(found.values())) != 1 or found["mlflow"] <= SEARCH_LIMIT:
        raise RuntimeError(f"search matches differ: {found}")
    print(f"  the search filter matches {found['mlflow']:,} runs in every system")


def _bind_search(
    tracker: Tracker, experiment_id: str, limit: int, total: bool = False
) -> Callable[[int], object]:
    def search(_: int) -> None:
        found = tracker.search(experiment_id, SEARCH_FILTER, limit, total)
        if found != limit:
            raise RuntimeError(f"search returned {found} runs, expected {limit}")

    return search


def bench_history(systems: Systems, sizes: Sizes) -> Row:
    """One metric with N points, logged in batches of 1,000 (MLflow's largest batch)."""
    run_of = {
        client: _history_run(systems.clients[client], sizes.history_points)
        for client in ("mlflow", "fasttrack", "grpc")
    }
    run_of["rest"] = run_of["grpc"]
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
    latencies: dict[str, list[float]] = {client: [] for client in CLIENTS}
    cpu_s: dict[str, dict[str, float]] = {client: {} for client in CLIENTS}
    for client in CLIENTS:
        warm_up(calls[client], budget)
    for span in rounds(budget, ROUNDS):
        for client in CLIENTS:
            before = systems.meter.snapshot()
            latencies[client] += sample_span(calls[client], span)
            _add_cpu(cpu_s[client], before, systems.meter.snapshot())
    stats = {client: summarize(latencies[client], points_per_call) for client in CLIENTS}
    cpu = {
        client: per_call_ms(_zero(), cpu_s[client], len(latencies[client])) for client in CLIENTS
    }
    row = Row(key, title, stats, cpu)
    print(f"{title}: " + ", ".join(f"{c} {_progress(s)}" for c, s in stats.items()))
    return row


def bench_concurrent(systems: Systems, sizes: Sizes, series: bool = False) -> Row:
    """WRITERS clients at once, each with a connection and a run of its own, logging
    BATCH_POINTS-point batches (mlmesh's as one series with `series`); the aggregate points/s
    over the wall time of each turn."""
    groups = {client: writers(systems.factories[client]) for client in CLIENTS}
    totals = {client: Totals() for client in CLIENTS}
    cpu_s: dict[str, dict[str, float]] = {client: {} for client in CLIENTS}
    for client in CLIENTS:
        write_round(groups[client], 0.0, BATCH_POINTS, totals[client], timed=False, series=series)
    for _ in range(ROUNDS):
        for client in CLIENTS:
            before = systems.meter.snapshot()
            seconds = sizes.concurrent_s / ROUNDS
            write_round(groups[client], seconds, BATCH_POINTS, totals[client], series=series)
            _add_cpu(cpu_s[client], before, systems.meter.snapshot())
    for group in groups.values():
        for writer in group:
            _close(writer.tracker)
    stats, cpu = {}, {}
    for client in CLIENTS:
        found = totals[client]
        batch_stats = summarize(found.latencies, BATCH_POINTS)
        stats[client] = dataclasses.replace(batch_stats, points_per_s=found.points_per_s)
        cpu[client] = per_call_ms(_zero(), cpu_s[client], len(found.latencies))
    title = f"{WRITERS} concurrent writers, {BATCH_POINTS:,}-point batches"
    if series:
        title += ", mlmesh as one series"
    row = Row("concurrent_series" if series else "concurrent", title, stats, cpu)
    print(f"{title}: " + ", ".join(f"{c} {_progress(s)}" for c, s in stats.items()))
    return row


# Row key -> step, in the order a full run takes them.
OPERATIONS = {
    "create_run": bench_create_run,
    "log_batch": bench_log_batch,
    "log_batch_series": bench_log_batch_series,
    "log_metric": bench_log_metric,
    "get_run": bench_get_run,
    "search": bench_search,
    "search_total": bench_search_total,
    "history": bench_history,
    "concurrent": bench_concurrent,
    "concurrent_series": lambda systems, sizes: bench_concurrent(systems, sizes, series=True),
}


def _close(tracker: Tracker) -> None:
    close = getattr(tracker, "close", None)
    if close is not None:
        close()


def _add_cpu(into: dict[str, float], before: dict[str, float], after: dict[str, float]) -> None:
    for group, seconds in after.items():
        into[group] = into.get(group, 0.0) + seconds - before[group]


def _zero() -> dict[str, float]:
    return dict.fromkeys(GROUPS, 0.0)


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
