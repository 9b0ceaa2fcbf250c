"""`python -m bench.variants`: one change to the experiments service measured against another,
and against FastTrackML, in the same interleaved rounds.

Each variant is an experiments service of its own (its own database on one PostgreSQL
cluster) behind an Envoy gateway of its own, started with extra environment variables: a
setting (`loop=MLMESH_EXPERIMENTS_EVENT_LOOP=asyncio`) or another checkout of the code
(`base=PYTHONPATH=/tmp/base/services/experiments:/tmp/base/services/common`), or Envoy's
threads (`one=ENVOY_CONCURRENCY=1`, default 2). All run at
once; every operation's calls go to each variant's gRPC and REST clients and to FastTrackML in
turn, round after round, so that drift on the machine hits all alike. Prints a table of p50
(p95) latencies, and with --out writes it as Markdown."""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench import cpu
from bench.clients import FastTrackTracker, GrpcTracker, Point, RestTracker, Tracker
from bench.fasttrack import FastTrackServer
from bench.measure import Span, percentile, sample_span
from bench.seed import log_run_details, search_runs, seed_api, settle
from bench.stack import _experiments_service, _go_url, _postmaster_pid, scratch
from bench.workload import BATCH_POINTS, SEARCH_FILTER, SEARCH_LIMIT
from tests.helpers.gateway import start_gateway

ROUNDS = 5
SEARCH_RUNS = 1_500
ENVOY_CONCURRENCY = "ENVOY_CONCURRENCY"
OPERATIONS = ("create_run", "log_metric", "get_run", "search", "log_batch")


def _parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, rest = text.partition("=")
    env = {}
    for item in filter(None, rest.split(",")) if rest else ():
        key, _, value = item.partition("=")
        env[key] = value
    return name, env


def _bind(operation: str, tracker: Tracker, setup: dict[str, str]) -> Callable[[int], object]:
    """The operation as a call on `tracker`, over the data `setup` made for it."""
    now = time.time_ns() // 1_000_000
    if operation == "create_run":
        experiment = tracker.create_experiment(f"variants-{uuid.uuid4().hex[:8]}")
        return lambda i: tracker.create_run(experiment, f"run-{i}", {"source": "bench"})
    if operation == "log_metric":
        run_id = _new_run(tracker)
        return lambda i: tracker.log_metric(run_id, Point("loss", 1 / (i + 1), i, now + i))
    if operation == "get_run":
        return lambda _: tracker.get_run(setup["run"])
    if operation == "search":
        return lambda _: tracker.search(setup["search"], SEARCH_FILTER, SEARCH_LIMIT)
    run_id = _new_run(tracker)

    def log_batch(i: int) -> None:
        first = i * BATCH_POINTS
        points = [Point("loss", 0.5, s, now) for s in range(first, first + BATCH_POINTS)]
        tracker.log_batch(tracker.prepare_batch(run_id, points))

    return log_batch


def _new_run(tracker: Tracker) -> str:
    return tracker.create_run(tracker.create_experiment(f"v-{uuid.uuid4().hex[:8]}"), "r", {})


def _seed(tracker: Tracker, factory: Callable[[], Tracker]) -> dict[str, str]:
    run_id = _new_run(tracker)
    log_run_details(tracker, run_id)
    search = tracker.create_experiment(f"variants-search-{uuid.uuid4().hex[:8]}")
    seed_api(factory, search, search_runs(SEARCH_RUNS))
    return {"run": run_id, "search": search}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "variants", nargs="+", help="NAME or NAME=VAR=VALUE,VAR=VALUE (extra environment)"
    )
    parser.add_argument("--only", default=",".join(OPERATIONS), help="operations to run")
    parser.add_argument("--calls", type=int, default=60, help="calls per client per round")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    operations = [op.strip() for op in args.only.split(",") if op.strip()]
    os.environ["NO_PROXY"] = "127.0.0.1"
    load = os.getloadavg()[0]
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "variants")
        fasttrack_database = postgres.create_database("fasttrack")
        fasttrack = FastTrackServer(_go_url(fasttrack_database), workdir)
        cleanup.callback(fasttrack.stop)
        fasttrack.start()
        factories: dict[str, Callable[[], Tracker]] = {
            "FastTrackML": lambda: FastTrackTracker(fasttrack.url)
        }
        assert fasttrack.process is not None
        postgres_pid = _postmaster_pid(postgres)
        # The processes whose CPU time a client's calls cost: its server(s) and PostgreSQL.
        servers = {"FastTrackML": [fasttrack.process.pid, postgres_pid]}
        databases = [fasttrack_database.url("psycopg2")]
        for text in args.variants:
            name, env = _parse_variant(text)
            # Envoy's worker threads (--concurrency), not the service's environment.
            envoy_threads = int(env.pop(ENVOY_CONCURRENCY, "2"))
            database = postgres.create_database(f"v_{uuid.uuid4().hex[:8]}")
            databases.append(database.url("psycopg2"))
            saved = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            try:
                (workdir / name).mkdir(parents=True, exist_ok=True)
                service = _experiments_service(database, workdir / name)
                cleanup.callback(service.stop)
                service.start()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
            gateway = start_gateway(
                workdir / name, {"experiments": service.address}, concurrency=envoy_threads
            )
            cleanup.callback(gateway.stop)
            factories[f"{name} gRPC"] = lambda a=service.address: GrpcTracker(a)
            factories[f"{name} REST"] = lambda u=gateway.base_url: RestTracker(u)
            assert service.process is not None
            servers[f"{name} gRPC"] = [service.process.pid, postgres_pid]
            servers[f"{name} REST"] = [service.process.pid, gateway.process.pid, postgres_pid]
        trackers = {name: factory() for name, factory in factories.items()}
        setups: dict[str, dict[str, str]] = {}
        for name, tracker in trackers.items():
            if name.endswith(" REST"):  # the same service as its gRPC client
                setups[name] = setups[name.replace(" REST", " gRPC")]
            else:
                setups[name] = _seed(tracker, factories[name])
        settle(databases)
        results = {op: _measure(op, trackers, setups, servers, args.calls) for op in operations}
    table = _render(results, load, args.calls)
    print(table)
    if args.out:
        args.out.write_text(table)


def _server_seconds(roots: list[int]) -> float:
    """CPU seconds (user + system) so far of the process trees under `roots`."""
    children: dict[int, list[int]] = {}
    for pid, parent in cpu._parents().items():
        children.setdefault(parent, []).append(pid)
    return sum(cpu._cpu_seconds(pid) for pid in cpu._trees(roots, children))


def _measure(
    operation: str,
    trackers: dict[str, Tracker],
    setups: dict[str, dict[str, str]],
    servers: dict[str, list[int]],
    calls: int,
) -> dict[str, tuple[list[float], float]]:
    """Each client's latencies, and the CPU ms per call of its servers and PostgreSQL (less
    sensitive than latency to the other work on the machine)."""
    bound = {name: _bind(operation, t, setups[name]) for name, t in trackers.items()}
    found: dict[str, list[float]] = {name: [] for name in trackers}
    spent = dict.fromkeys(trackers, 0.0)
    for call in bound.values():
        for i in range(3):
            call(10**6 + i)  # warm-up, on indexes the timed calls never use
    for round_ in range(ROUNDS):
        for name, call in bound.items():
            before = _server_seconds(servers[name])
            found[name] += sample_span(call, Span(round_ * calls, calls, 60, calls))
            spent[name] += _server_seconds(servers[name]) - before
    print(operation, {name: f"{percentile(v, 50) * 1000:.2f}" for name, v in found.items()})
    return {name: (found[name], spent[name] * 1000 / len(found[name])) for name in trackers}


def _render(
    results: dict[str, dict[str, tuple[list[float], float]]], load: float, calls: int
) -> str:
    names = list(next(iter(results.values())))
    lines = [
        f"{calls} calls per client in each of {ROUNDS} rounds; p50 (p95) ms, the p50 ratio "
        "FastTrackML / client, and the CPU ms per call of the client's servers and PostgreSQL "
        f"(REST: Envoy included); load before: {load:.2f}",
        "",
        "| client | " + " | ".join(results) + " |",
        "|---|" + "--:|" * len(results),
    ]
    for name in names:
        cells = []
        for found in results.values():
            latencies, cpu_ms = found[name]
            p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
            peer = percentile(found["FastTrackML"][0], 50)
            cells.append(f"{p50 * 1000:.2f} ({p95 * 1000:.2f}) {peer / p50:.2f}x, cpu {cpu_ms:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
