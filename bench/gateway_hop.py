"""`python -m bench.gateway_hop`: what the Envoy hop costs a get run and a search, part by part.

The same experiments service behind several Envoys at once, each with the production config
(`gateway.envoy_config.build_config`) less one part (access log, stats, a Lua filter, ...), and
the gRPC stub straight to the service as the floor; the variants take turns in rounds. Writes
its own section of docs/benchmarks.md (`<!-- gateway:begin -->`), which `make bench` keeps."""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench import ROOT
from bench.clients import GrpcTracker, RestTracker, Tracker
from bench.measure import Span, percentile, sample_span
from bench.sections import markers, write_section
from bench.seed import log_run_details, search_runs, seed_api, settle
from bench.stack import _experiments_service, scratch
from bench.workload import SEARCH_FILTER, SEARCH_LIMIT
from gateway.envoy_config import GatewaySettings, build_config
from tests.helpers.gateway import ENVOY
from tests.helpers.net import LOOPBACK, free_port, wait_for_http

SECTION = "gateway"
ROUNDS = 5
CALLS_PER_ROUND = 150
SEARCH_RUNS = 1_500


def _manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _without_filter(name: str) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        manager = _manager(config)
        manager["http_filters"] = [f for f in manager["http_filters"] if f["name"] != name]

    return change


def _without_access_log(config: dict[str, Any]) -> None:
    _manager(config).pop("access_log")


def _without_stats(config: dict[str, Any]) -> None:
    config["stats_config"] = {"stats_matcher": {"reject_all": True}}


def _without_request_id(config: dict[str, Any]) -> None:
    manager = _manager(config)
    manager["generate_request_id"] = False
    manager["always_set_request_id_in_response"] = False


def _without_health_checks(config: dict[str, Any]) -> None:
    for cluster in config["static_resources"]["clusters"]:
        cluster.pop("health_checks", None)


def _minimal(config: dict[str, Any]) -> None:
    for change in (
        _without_access_log,
        _without_stats,
        _without_request_id,
        _without_filter("mlmesh.http_status"),
        _without_filter("mlmesh.healthz"),
        _without_filter("envoy.filters.http.cors"),
        _without_filter("mlmesh.strip_client_tenant"),
    ):
        change(config)


VARIANTS: dict[str, Callable[[dict[str, Any]], None] | None] = {
    "as shipped": None,
    "no access log": _without_access_log,
    "no stats (reject_all)": _without_stats,
    "no request id generated": _without_request_id,
    "no status Lua filter": _without_filter("mlmesh.http_status"),
    "no /healthz Lua filter": _without_filter("mlmesh.healthz"),
    "no CORS filter": _without_filter("envoy.filters.http.cors"),
    "no tenant-strip filter": _without_filter("mlmesh.strip_client_tenant"),
    "no active health checks": _without_health_checks,
    "all of the above off": _minimal,
}


@contextmanager
def _envoy(workdir: Path, name: str, upstream: str, change: Callable | None) -> Iterator[str]:
    settings = GatewaySettings(
        port=free_port(), admin_port=free_port(), upstreams={"experiments": upstream}
    )
    config = copy.deepcopy(build_config(settings))
    if change is not None:
        change(config)
    path = workdir / f"envoy-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with (workdir / f"{path.stem}.log").open("wb") as log:
        process = subprocess.Popen(
            [
                *(str(ENVOY), "-c", str(path), "--log-level", "warn", "--disable-hot-restart"),
                *("--concurrency", "2", "--file-flush-interval-msec", "1000"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_for_http(
            f"http://{LOOPBACK}:{settings.admin_port}/ready",
            60,
            alive=lambda: process.poll() is None,
        )
        yield f"http://{LOOPBACK}:{settings.port}"
    finally:
        process.terminate()
        process.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    calls = 10 if args.quick else CALLS_PER_ROUND
    os.environ["NO_PROXY"] = "127.0.0.1"
    load = os.getloadavg()[0]
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "hop")
        database = postgres.create_database("hop")
        service = _experiments_service(database, workdir)
        cleanup.callback(service.stop)
        service.start()
        urls = {
            name: cleanup.enter_context(_envoy(workdir, name, service.address, change))
            for name, change in VARIANTS.items()
        }
        grpc = GrpcTracker(service.address)
        cleanup.callback(grpc.close)
        run_id, experiment_id = _seed(grpc, service.address, database.url("psycopg2"))
        trackers: dict[str, Tracker] = {"gRPC straight to the service": grpc}
        for name, url in urls.items():
            trackers[name] = RestTracker(url)
        results = _measure(trackers, run_id, experiment_id, calls)
    write_section(args.out, SECTION, _render(results, load, calls))
    print(f"wrote the {SECTION} section of {args.out}")


def _seed(grpc: GrpcTracker, address: str, database_url: str) -> tuple[str, str]:
    experiment_id = grpc.create_experiment(f"hop-{time.time_ns()}")
    run_id = grpc.create_run(experiment_id, "details", {})
    log_run_details(grpc, run_id)
    search_experiment = grpc.create_experiment(f"hop-search-{time.time_ns()}")
    seed_api(lambda: GrpcTracker(address), search_experiment, search_runs(SEARCH_RUNS))
    settle([database_url])
    return run_id, search_experiment


def _measure(
    trackers: dict[str, Tracker], run_id: str, experiment_id: str, calls: int
) -> dict[str, dict[str, list[float]]]:
    operations = {
        "get run": lambda t: lambda _: t.get_run(run_id),
        "search": lambda t: lambda _: t.search(experiment_id, SEARCH_FILTER, SEARCH_LIMIT),
    }
    found: dict[str, dict[str, list[float]]] = {op: {} for op in operations}
    for op, bind in operations.items():
        for name, tracker in trackers.items():
            for i in range(5):
                bind(tracker)(i)
            found[op][name] = []
        for _ in range(ROUNDS):
            for name, tracker in trackers.items():
                span = Span(0, calls, 60, calls)
                found[op][name] += sample_span(bind(tracker), span)
        print(op, {name: f"{percentile(v, 50) * 1000:.2f}" for name, v in found[op].items()})
    return found


def _render(results: dict[str, dict[str, list[float]]], load: float, calls: int) -> str:
    begin, end = markers(SECTION)
    lines = [
        begin,
        "## The gateway hop, part by part",
        "",
        "`python -m bench.gateway_hop`: one experiments service (PostgreSQL) behind one Envoy "
        "per variant, all running at once: the production config less one part, and the "
        "gRPC stub straight to the service as the floor. Each variant takes "
        f"{calls} calls in each of {ROUNDS} rounds, in turn; p50 (p95) in ms, one keep-alive "
        f"client. Get run: 20 params, 20 tags, 50 metrics; search: {SEARCH_RUNS:,} runs, tag + "
        f"metric filter, {SEARCH_LIMIT} returned, `include_total=false`. Load average before "
        f"the run: {load:.2f} (2 cores shared with other work: "
        "differences under ~0.1 ms are noise).",
        "",
        "| Variant | get run | vs shipped | search | vs shipped |",
        "|---|--:|--:|--:|--:|",
    ]
    shipped = {op: percentile(results[op]["as shipped"], 50) for op in results}
    names = list(results["get run"])
    for name in names:
        cells = []
        for op in ("get run", "search"):
            p50 = percentile(results[op][name], 50)
            p95 = percentile(results[op][name], 95)
            cells.append(f"{p50 * 1000:.2f} ({p95 * 1000:.2f})")
            cells.append(f"{(p50 - shipped[op]) * 1000:+.2f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", end]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
