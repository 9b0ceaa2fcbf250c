"""docs/benchmarks.md from one run's numbers: the machine, how to reproduce, the results table,
the targets checked against the numbers, and notes. The harness writes all of it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.concurrent import WRITERS
from bench.cpu import GROUPS
from bench.measure import Budget, Stats
from bench.workload import CLIENTS, ROUNDS, Row, Sizes

# A 1-minute load average above this before the run (half the cores busy) means other work
# competed for the cores.
BUSY_LOAD = (os.cpu_count() or 1) / 2
GROUP_NAMES = {
    "client": "client (this process)",
    "mlflow": "MLflow server",
    "fasttrack": "FastTrackML",
    "service": "mlmesh service",
    "envoy": "Envoy",
    "postgres": "PostgreSQL",
}
CLIENT_NAMES = {
    "mlflow": "MLflow",
    "fasttrack": "FastTrackML",
    "grpc": "mlmesh gRPC",
    "rest": "mlmesh REST",
}
PEERS = ("mlflow", "fasttrack")


@dataclass(frozen=True)
class Environment:
    cores: int
    cpu: str
    python: str
    postgres: str
    mlflow: str
    fasttrack: str
    envoy: str
    # Experiments server processes (MLMESH_EXPERIMENTS_WORKERS, default the cores).
    service_workers: int
    commit: str
    date: str
    # 1-minute load average just before the run: other work on the machine skews every number.
    load_before: float
    nice: int


@dataclass(frozen=True)
class Target:
    text: str
    row: str
    client: str
    # A speed-up over `versus` to reach, or (speedup=False) a p50 latency in ms not to exceed.
    threshold: float
    speedup: bool = True
    versus: str = "mlflow"


TARGETS = (
    Target("log-batch over gRPC ≥ 40x MLflow's points/s", "log_batch", "grpc", 40),
    Target("log-batch over REST ≥ 20x MLflow's points/s", "log_batch", "rest", 20),
    Target("search over gRPC ≥ 10x faster than MLflow (p50)", "search", "grpc", 10),
    Target("search over REST ≥ 10x faster than MLflow (p50)", "search", "rest", 10),
    Target("metric history over gRPC ≥ 10x faster than MLflow (p50)", "history", "grpc", 10),
    Target("metric history over REST ≥ 10x faster than MLflow (p50)", "history", "rest", 10),
    Target("get run over REST ≤ 2 ms (p50)", "get_run", "rest", 2.0, speedup=False),
    *(
        Target(f"{name} over REST ≥ 1.0x FastTrackML (p50)", key, "rest", 1.0, versus="fasttrack")
        for key, name in (
            ("get_run", "get run"),
            ("search", "search"),
            ("history", "metric history"),
            ("create_run", "create run"),
            ("log_metric", "log-metric"),
        )
    ),
    Target(
        "log-batch over REST ≥ 3x FastTrackML's points/s",
        "log_batch",
        "rest",
        3,
        versus="fasttrack",
    ),
    Target(
        "concurrent writers over REST ≥ 3x FastTrackML's points/s",
        "concurrent",
        "rest",
        3,
        versus="fasttrack",
    ),
    # The same goals with mlmesh's batches as one series (the peers' APIs have no such shape).
    *(
        Target(f"log-batch as a series over {name} ≥ {goal}x MLflow's points/s", key, client, goal)
        for key, name, client, goal in (
            ("log_batch_series", "gRPC", "grpc", 40),
            ("log_batch_series", "REST", "rest", 20),
        )
    ),
    Target(
        "log-batch as a series over REST ≥ 3x FastTrackML's points/s",
        "log_batch_series",
        "rest",
        3,
        versus="fasttrack",
    ),
    Target(
        "concurrent writers as series over REST ≥ 3x FastTrackML's points/s",
        "concurrent_series",
        "rest",
        3,
        versus="fasttrack",
    ),
)


def speedup(row: Row, client: str, versus: str = "mlflow") -> float:
    """mlmesh over a peer, higher is better: throughput ratio for logging, p50 ratio otherwise."""
    mine, peer = row.stats[client], row.stats[versus]
    if row.is_throughput:
        return (mine.points_per_s or 0.0) / (peer.points_per_s or 1.0)
    return peer.p50_ms / mine.p50_ms


def evaluate(target: Target, rows: dict[str, Row]) -> tuple[float, bool]:
    """The measured figure for `target` and whether it is met."""
    row = rows[target.row]
    if target.speedup:
        value = speedup(row, target.client, target.versus)
        return value, value >= target.threshold
    value = row.stats[target.client].p50_ms
    return value, value <= target.threshold


def render(rows: list[Row], env: Environment, sizes: Sizes, elapsed_s: float) -> str:
    by_key = {row.key: row for row in rows}
    # A run of some operations (`--only`) checks the targets of those.
    checks = [(target, *evaluate(target, by_key)) for target in TARGETS if target.row in by_key]
    sections = [
        _intro(env, sizes, elapsed_s),
        _reproduce(),
        _results(rows),
        _targets(checks),
        *[_floor(row, checks) for row in rows if row.floor is not None],
        _details(rows, sizes),
        _cpu(rows),
        _notes(checks, sizes, env),
    ]
    return "\n\n".join(sections) + "\n"


def _intro(env: Environment, sizes: Sizes, elapsed_s: float) -> str:
    quick = (
        "\n\n**Smoke run (`--quick`): tiny sizes, the numbers are not meaningful.**"
        if sizes.label == "quick"
        else ""
    )
    return f"""# Benchmarks: mlmesh experiments vs MLflow and FastTrackML

<!-- Generated by `python -m bench.experiments` (`make bench`); edits are overwritten. -->

The same experiment-tracking workload against a real `mlflow server`, FastTrackML (the Go
reimplementation of MLflow's tracking server) and the mlmesh experiments service, all on one
PostgreSQL cluster, on one machine: one request at a time, the systems taking turns in
{ROUNDS} rounds per operation, then {WRITERS} concurrent writers.

- Machine: {env.cores} cores (`nproc`), {env.cpu}
- Software: Python {env.python}, PostgreSQL {env.postgres}, MLflow {env.mlflow}, \
FastTrackML {env.fasttrack}, Envoy {env.envoy}, mlmesh {env.commit} \
({env.service_workers} experiments worker processes)
- Date: {env.date}; sizes: {sizes.label}; the whole run took {elapsed_s:.0f} s; 1-minute load
  average before it started: {env.load_before:.2f}; scheduling priority (nice): {env.nice}{quick}"""


def _reproduce() -> str:
    return f"""## How to reproduce

```
make bench                                    # full run, rewrites this file
.venv/bin/python -m bench.experiments --quick --out /tmp/bench.md   # smoke run, < 1 minute
```

The harness starts a throwaway PostgreSQL cluster with one database per system, `mlflow server`
(one uvicorn worker, PostgreSQL backend store, artifacts proxied), FastTrackML (`fml server`,
installed by the harness with `pip install --no-deps fasttrackml==0.6.0` into `.bench/`, a
virtualenv of its own), the experiments service (asyncpg, as deployed: default pool, log level
and worker processes) and the Envoy gateway, all on loopback, and stops them at the end.
Clients: MLflow's own `MlflowClient` (its REST client); plain JSON over a keep-alive `requests`
session to FastTrackML's MLflow REST API; the generated gRPC stub straight to the service; a
keep-alive `requests` session through Envoy (REST/JSON). Each operation gets warm-up calls
first, then timed calls (`time.perf_counter`) in {ROUNDS} rounds, each client taking its turn
in every round, until the count or time budget is used up. Concurrent writers: {WRITERS}
threads per system, each with a connection and a run of its own, logging 1,000-point batches
for a share of the time in each round; points/s is the aggregate over the rounds' wall time,
p50/p95 the latency of one batch."""


def _results(rows: list[Row]) -> str:
    lines = [
        "## Results",
        "",
        "Latency operations: p50 (p95) in ms. Logging operations: points per second over the",
        "timed calls (p50 latency of one request). Ratios: mlmesh over MLflow and over",
        "FastTrackML, higher is better (p50 ratio for latencies, throughput ratio for logging).",
        "",
        "| Operation | MLflow | FastTrackML | mlmesh gRPC | mlmesh REST "
        "| gRPC / MLflow | REST / MLflow | gRPC / FastTrackML | REST / FastTrackML |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cells = [_cell(row.stats[client]) for client in CLIENTS]
        ratios = [
            f"{speedup(row, client, peer):.1f}x" for peer in PEERS for client in ("grpc", "rest")
        ]
        lines.append(f"| {row.title} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def _cell(stats: Stats) -> str:
    if stats.points_per_s is not None:
        return f"{stats.points_per_s:,.0f} pts/s ({_ms(stats.p50_ms)} ms)"
    return f"{_ms(stats.p50_ms)} ms ({_ms(stats.p95_ms)})"


def _targets(checks: list[tuple[Target, float, bool]]) -> str:
    lines = ["## Targets", "", "| Target | Measured | Met |", "|---|--:|:-:|"]
    for target, value, met in checks:
        lines.append(
            f"| {target.text} | {_measured(target, value)} | {'met' if met else 'not met'} |"
        )
    return "\n".join(lines)


def _details(rows: list[Row], sizes: Sizes) -> str:
    lines = [
        "## Details",
        "",
        "| Operation | Client | timed calls | p50 ms | p95 ms | mean ms | points/s |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        for client in CLIENTS:
            s = row.stats[client]
            rate = f"{s.points_per_s:,.0f}" if s.points_per_s is not None else "—"
            lines.append(
                f"| {row.title} | {CLIENT_NAMES[client]} | {s.count} | {_ms(s.p50_ms)} | "
                f"{_ms(s.p95_ms)} | {_ms(s.mean_ms)} | {rate} |"
            )
    budgets = ", ".join(
        f"{name} {_budget(getattr(sizes, name))}"
        for name in ("create_run", "log_batch", "log_metric", "get_run", "search", "history")
    )
    budgets += f", concurrent writers {sizes.concurrent_s:g} s per system"
    lines += [
        "",
        f"Budgets (warm-up + at most N timed calls, or fewer once the time budget is spent and "
        f"at least {sizes.create_run.minimum} are in): {budgets}. Search data: "
        f"{sizes.search_runs:,} runs per system; history: {sizes.history_points:,} points.",
    ]
    return "\n".join(lines)


def _cpu(rows: list[Row]) -> str:
    names = " | ".join(GROUP_NAMES[group] for group in GROUPS)
    lines = [
        "## Where the time goes",
        "",
        "CPU time per timed call, in ms, by process (user + system time from /proc, in 10 ms",
        "clock ticks averaged over the calls), beside the mean latency. CPU above the latency",
        "means work in parallel (threads, PostgreSQL backends); below it, waiting (for the",
        "other processes on the machine, too).",
        "",
        f"| Operation | Client | mean latency | {names} |",
        "|---|---|--:|" + "--:|" * len(GROUPS),
    ]
    for row in rows:
        for client in CLIENTS:
            cpu = " | ".join(f"{row.cpu_ms[client][group]:.1f}" for group in GROUPS)
            lines.append(
                f"| {row.title} | {CLIENT_NAMES[client]} | {_ms(row.stats[client].mean_ms)} "
                f"| {cpu} |"
            )
    return "\n".join(lines)


def _budget(budget: Budget) -> str:
    return f"{budget.warmup} + {budget.iterations} in {budget.seconds:g} s"


def _floor(row: Row, checks: list[tuple[Target, float, bool]]) -> str:
    """How much of the row's request is the database statement, and how far the statement alone
    would get against the row's targets."""
    floor, mlflow = row.floor, row.stats["mlflow"]
    assert floor is not None and floor.points_per_s and mlflow.points_per_s
    lines = [
        f"## The database's share of a {row.title.split(',')[0]}",
        "",
        "The experiments service's own metrics statement, executed straight through asyncpg on "
        "its database with the same points (`bench/floor.py`): no gRPC, no request decoding, "
        "no validation, no run check. It bounds what the service can reach here: a request does "
        "everything the statement does, and more.",
        "",
        "| | p50 ms | points/s | vs MLflow | share of the request (mean) |",
        "|---|--:|--:|--:|--:|",
        f"| statement alone | {_ms(floor.p50_ms)} | {floor.points_per_s:,.0f} | "
        f"{floor.points_per_s / mlflow.points_per_s:.1f}x | — |",
    ]
    for client in ("grpc", "rest"):
        stats = row.stats[client]
        lines.append(
            f"| {CLIENT_NAMES[client]} request | {_ms(stats.p50_ms)} | "
            f"{stats.points_per_s or 0:,.0f} | {speedup(row, client):.1f}x | "
            f"{floor.mean_ms / stats.mean_ms:.0%} |"
        )
    out_of_reach = [
        target.text
        for target, _, ok in checks
        if target.row == row.key
        and not ok
        and floor.points_per_s / mlflow.points_per_s < target.threshold
    ]
    if out_of_reach:
        lines += [
            "",
            "Beyond what the statement alone reaches in this run: " + "; ".join(out_of_reach) + ".",
        ]
    return "\n".join(lines)


def _notes(checks: list[tuple[Target, float, bool]], sizes: Sizes, env: Environment) -> str:
    met = sum(1 for _, _, ok in checks if ok)
    missed = [target.text for target, _, ok in checks if not ok]
    notes = [f"{met} of {len(checks)} targets met."]
    if missed:
        notes.append("Not met: " + "; ".join(missed) + ".")
    if env.load_before > BUSY_LOAD:
        notes.append(
            f"The machine was already busy when the run started (load {env.load_before:.2f}): "
            "other processes shared the cores, so the numbers are noisier than usual."
        )
    notes += [
        "Everything shares the machine's cores: client, server, PostgreSQL and (for REST) "
        "Envoy. Client-side work (building and encoding requests, decoding answers) is inside "
        "every number, for both systems; MLflow's client does more of it (entities, protobuf "
        "JSON).",
        "One client, one request at a time: latencies, not throughput under concurrent load. "
        "The throwaway PostgreSQL runs with fsync and synchronous_commit off for both systems.",
        f"MLflow's search data ({sizes.search_runs:,} runs) is written straight into its "
        "database through MLflow's own table models (through its REST API it takes minutes); "
        "the harness checks that every system matches the same runs before timing. "
        "FastTrackML's is seeded through its REST API, mlmesh's through its gRPC API. Every "
        "database gets VACUUM ANALYZE before the reads.",
        "MLflow's and FastTrackML's searches return no total, only a page token; so the "
        "search row asks mlmesh for none either (`include_total=false`). The next row asks "
        "for the contract's default, the exact `total` of matching runs (a count over every "
        "match, run beside the page's query on a second connection).",
        'The rows "mlmesh as one series" log the same points with mlmesh\'s batches in columns '
        "(log-batch's `series`: one key, then its values, steps and timestamps as arrays); "
        "MLflow's API, and so FastTrackML's, has one object per point only, so theirs send the "
        "same requests as in the rows above, timed again in the same rounds.",
        "Numbers move by several percent between runs; compare the ratios within one run.",
    ]
    return "## Notes\n\n" + "\n".join(f"- {note}" for note in notes)


def _measured(target: Target, value: float) -> str:
    return f"{value:.1f}x" if target.speedup else f"{_ms(value)} ms"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"
