"""`make bench`: the experiments service (gRPC and REST through Envoy) against a real `mlflow
server`, same PostgreSQL cluster, same workload, side by side; writes docs/benchmarks.md."""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import mlflow
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from mlmesh.experiments.v1 import experiment_pb2, experiments_service_pb2_grpc
from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from tests.helpers.gateway import start_gateway
from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.net import free_port
from tests.helpers.postgres import PostgresCluster, find_pg_bin
from tests.helpers.services import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    runs: int  # create-run repetitions
    batches: int  # log-batch calls of 1,000 points
    single: int  # one-metric requests
    gets: int
    search_runs: int  # runs seeded for the search
    searches: int
    history_points: int
    histories: int


FULL = Sizes(200, 20, 500, 300, 5000, 30, 10_000, 20)
QUICK = Sizes(20, 3, 50, 30, 300, 5, 2000, 3)


@dataclass
class Result:
    operation: str
    unit: str  # "ms" (p50 latency, lower is better) or "points/s" (higher is better)
    values: dict[str, float]  # client -> value
    p95: dict[str, float]


def timed(fn: Callable[[int], object], n: int, warmup: int = 3) -> list[float]:
    """Latencies in ms of n calls of fn(i), after `warmup` untimed calls."""
    for i in range(warmup):
        fn(-1 - i)
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def p(latencies: list[float], q: float) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[int(q) - 1]


class Mlmesh:
    """The same operations over gRPC (stub) and REST (requests through Envoy)."""

    def __init__(self, address: str, base_url: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = experiments_service_pb2_grpc.ExperimentServiceStub(self.channel)
        self.http = requests.Session()
        self.api = f"{base_url}/api/v1/experiments"

    def experiment(self) -> str:
        request = pb.CreateExperimentRequest(experiment=experiment_pb2.Experiment())
        return self.stub.CreateExperiment(request).id

    def create_run(self, experiment_id: str, rest: bool) -> str:
        if rest:
            response = self.http.post(f"{self.api}/runs", json={"experiment_id": experiment_id})
            response.raise_for_status()
            return response.json()["id"]
        return self.stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment_id)).id

    def log_batch(self, run_id: str, points: list[tuple[str, float, int]], rest: bool) -> None:
        if rest:
            body = {"metrics": [{"key": k, "value": v, "step": s} for k, v, s in points]}
            self.http.post(f"{self.api}/runs/{run_id}/log-batch", json=body).raise_for_status()
            return
        metrics = [pb.MetricInput(key=k, value=v, step=s) for k, v, s in points]
        self.stub.LogBatch(pb.LogBatchRequest(run_id=run_id, metrics=metrics))

    def log_metric(self, run_id: str, step: int, rest: bool) -> None:
        if rest:
            body = {"metrics": {"loss": 1.0 / (step + 2)}, "step": step}
            self.http.post(f"{self.api}/runs/{run_id}/log-metrics", json=body).raise_for_status()
            return
        request = pb.LogMetricsRequest(run_id=run_id, metrics={"loss": 1.0 / (step + 2)}, step=step)
        self.stub.LogMetrics(request)

    def get_run(self, run_id: str, rest: bool) -> None:
        if rest:
            self.http.get(f"{self.api}/runs/{run_id}").raise_for_status()
            return
        self.stub.GetRun(pb.GetRunRequest(run_id=run_id))

    def search(self, experiment_id: str, query: str, rest: bool) -> int:
        if rest:
            response = self.http.get(
                f"{self.api}/runs",
                params={"experiment_id": experiment_id, "filter": query, "limit": 100},
            )
            response.raise_for_status()
            return len(response.json()["runs"])
        request = pb.ListRunsRequest(experiment_id=experiment_id, filter=query, limit=100)
        return len(self.stub.ListRuns(request).runs)

    def history(self, run_id: str, rest: bool) -> int:
        if rest:
            response = self.http.get(f"{self.api}/runs/{run_id}/metrics/eq/history")
            response.raise_for_status()
            return len(response.json()["points"])
        request = pb.GetMetricHistoryRequest(run_id=run_id, key="eq")
        return len(self.stub.GetMetricHistory(request).points)


def batch(n: int, key: str = "loss", offset: int = 0) -> list[tuple[str, float, int]]:
    return [(key, 1.0 / (i + 1), offset + i) for i in range(n)]


def run_workload(sizes: Sizes, mesh: Mlmesh, client: MlflowClient) -> list[Result]:
    ml_exp = client.create_experiment(f"bench-{uuid.uuid4().hex[:8]}")
    mesh_exp = mesh.experiment()
    now = int(time.time() * 1000)
    results: list[Result] = []

    def record(operation: str, unit: str, latencies: dict[str, list[float]], per_call=1):
        if unit == "ms":
            values = {c: p(v, 50) for c, v in latencies.items()}
        else:
            values = {c: per_call * 1000 * len(v) / sum(v) for c, v in latencies.items()}
        results.append(Result(operation, unit, values, {c: p(v, 95) for c, v in latencies.items()}))
        print(f"{operation}: " + ", ".join(f"{c}={x:,.1f}" for c, x in values.items()))

    record(
        "create run",
        "ms",
        {
            "mlflow": timed(lambda i: client.create_run(ml_exp), sizes.runs),
            "grpc": timed(lambda i: mesh.create_run(mesh_exp, False), sizes.runs),
            "rest": timed(lambda i: mesh.create_run(mesh_exp, True), sizes.runs),
        },
    )

    ml_run = client.create_run(ml_exp).info.run_id
    runs = {False: mesh.create_run(mesh_exp, False), True: mesh.create_run(mesh_exp, True)}

    def ml_batch(i: int) -> None:
        points = batch(1000, offset=(i + 10) * 1000)
        client.log_batch(ml_run, metrics=[Metric(k, v, now, s) for k, v, s in points])

    def mesh_batch(rest: bool) -> Callable[[int], None]:
        return lambda i: mesh.log_batch(runs[rest], batch(1000, offset=(i + 10) * 1000), rest)

    record(
        "log-batch, 1,000 points",
        "points/s",
        {
            "mlflow": timed(ml_batch, sizes.batches),
            "grpc": timed(mesh_batch(False), sizes.batches),
            "rest": timed(mesh_batch(True), sizes.batches),
        },
        per_call=1000,
    )
    record(
        "log-metric, 1 point per request",
        "points/s",
        {
            "mlflow": timed(
                lambda i: client.log_metric(ml_run, "loss", 0.5, step=i + 10), sizes.single
            ),
            "grpc": timed(lambda i: mesh.log_metric(runs[False], i + 10, False), sizes.single),
            "rest": timed(lambda i: mesh.log_metric(runs[True], i + 10, True), sizes.single),
        },
    )

    # A run as researchers log it: 20 params, 20 tags, 50 metrics.
    params = [(f"param_{i}", str(i)) for i in range(20)]
    tags = [(f"tag_{i}", f"value-{i}") for i in range(20)]
    ml_full = client.create_run(ml_exp).info.run_id
    client.log_batch(
        ml_full,
        metrics=[Metric(f"m_{i}", i / 10, now, 0) for i in range(50)],
        params=[Param(k, v) for k, v in params],
        tags=[RunTag(k, v) for k, v in tags],
    )
    mesh_full = mesh.create_run(mesh_exp, False)
    mesh.stub.LogBatch(
        pb.LogBatchRequest(
            run_id=mesh_full,
            metrics=[pb.MetricInput(key=f"m_{i}", value=i / 10) for i in range(50)],
            params=[pb.KeyValue(key=k, value=v) for k, v in params],
            tags=[pb.KeyValue(key=k, value=v) for k, v in tags],
        )
    )
    record(
        "get run (20 params, 20 tags, 50 metrics)",
        "ms",
        {
            "mlflow": timed(lambda i: client.get_run(ml_full), sizes.gets),
            "grpc": timed(lambda i: mesh.get_run(mesh_full, False), sizes.gets),
            "rest": timed(lambda i: mesh.get_run(mesh_full, True), sizes.gets),
        },
    )

    # Search: N runs, tag `bucket` in a..e, metric `score`; the filter matches ~10% (> 100).
    ml_search = client.create_experiment(f"bench-search-{uuid.uuid4().hex[:8]}")
    mesh_search = mesh.experiment()

    def seed(i: int) -> None:
        bucket, score = "abcde"[i % 5], (i * 7919 % 1000) / 1000
        run = client.create_run(ml_search, tags={"bucket": bucket})
        client.log_batch(run.info.run_id, metrics=[Metric("score", score, now, 0)])
        run_id = mesh.stub.CreateRun(
            pb.CreateRunRequest(experiment_id=mesh_search, tags={"bucket": bucket})
        ).id
        mesh.stub.LogMetrics(pb.LogMetricsRequest(run_id=run_id, metrics={"score": score}))

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(seed, range(sizes.search_runs)))
    print(
        f"seeded {sizes.search_runs} runs in both systems in {time.perf_counter() - started:.0f} s"
    )
    query = "tags.bucket = 'c' and metrics.score > 0.3"
    found = {
        "mlflow": len(client.search_runs([ml_search], query, max_results=100)),
        "grpc": mesh.search(mesh_search, query, False),
    }
    assert found["mlflow"] == found["grpc"] == min(100, found["mlflow"]), found
    record(
        f"search {sizes.search_runs:,} runs, tag + metric filter, 100 returned",
        "ms",
        {
            "mlflow": timed(
                lambda i: client.search_runs([ml_search], query, max_results=100), sizes.searches
            ),
            "grpc": timed(lambda i: mesh.search(mesh_search, query, False), sizes.searches),
            "rest": timed(lambda i: mesh.search(mesh_search, query, True), sizes.searches),
        },
    )

    ml_hist = client.create_run(ml_exp).info.run_id
    mesh_hist = mesh.create_run(mesh_exp, False)
    for chunk in range(sizes.history_points // 1000):
        points = batch(1000, "eq", chunk * 1000)
        client.log_batch(ml_hist, metrics=[Metric(k, v, now, s) for k, v, s in points])
        mesh.log_batch(mesh_hist, points, False)
    assert len(client.get_metric_history(ml_hist, "eq")) == mesh.history(mesh_hist, False)
    record(
        f"metric history, {sizes.history_points:,} points",
        "ms",
        {
            "mlflow": timed(lambda i: client.get_metric_history(ml_hist, "eq"), sizes.histories),
            "grpc": timed(lambda i: mesh.history(mesh_hist, False), sizes.histories),
            "rest": timed(lambda i: mesh.history(mesh_hist, True), sizes.histories),
        },
    )
    return results


TARGETS = {
    "log-batch, 1,000 points": {"grpc": 40.0, "rest": 20.0},
    "search": {"grpc": 10.0, "rest": 10.0},
    "metric history": {"grpc": 10.0, "rest": 10.0},
}


def speedup(result: Result, client: str) -> float:
    mine, theirs = result.values[client], result.values["mlflow"]
    return mine / theirs if result.unit == "points/s" else theirs / mine


def target_for(result: Result) -> dict[str, float]:
    return next((t for prefix, t in TARGETS.items() if result.operation.startswith(prefix)), {})


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{nproc} cores ({cpu}), Python {platform.python_version()}, MLflow {mlflow.__version__}"


def report(results: list[Result], sizes: Sizes, postgres_version: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.experiments`); do not edit by hand.",
        "",
        f"- Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, {postgres_version}.",
        "- Same workload, same machine, same PostgreSQL cluster (one database each): a real",
        "  `mlflow server` (one uvicorn worker, PostgreSQL backend store) driven by its own",
        "  `MlflowClient`; the mlmesh experiments service (asyncpg) over gRPC directly and over",
        "  REST through the real Envoy gateway (keep-alive `requests` session). One client, one",
        "  request at a time: latency, not load. The throwaway PostgreSQL runs with fsync off",
        "  for both.",
        "- Latencies are p50 (p95 in brackets), milliseconds; throughput is points per second over",
        "  the timed calls. Speed-up is mlmesh over MLflow (higher is better).",
        "",
        "| Operation | MLflow | mlmesh gRPC | mlmesh REST | speed-up gRPC | speed-up REST"
        " | target |",
        "|---|---|---|---|---|---|---|",
    ]
    checks = []
    for r in results:
        cells = []
        for client in ("mlflow", "grpc", "rest"):
            value = r.values[client]
            cells.append(
                f"{value:,.0f} pts/s"
                if r.unit == "points/s"
                else f"{value:.2f} ms ({r.p95[client]:.2f})"
            )
        target = target_for(r)
        goal = ", ".join(f"{c} ≥ {t:g}x" for c, t in target.items()) or "—"
        if r.operation.startswith("get run"):
            goal = "REST ≤ 2 ms p50"
            checks.append((f"{r.operation}: REST p50 ≤ 2 ms", r.values["rest"] <= 2.0))
        for client, needed in target.items():
            checks.append((f"{r.operation}: {client} ≥ {needed:g}x", speedup(r, client) >= needed))
        lines.append(
            f"| {r.operation} | {' | '.join(cells)} | {speedup(r, 'grpc'):.1f}x | "
            f"{speedup(r, 'rest'):.1f}x | {goal} |"
        )
    lines += ["", "## Targets", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {name}" for name, ok in checks]
    lines += [
        "",
        "Sizes: "
        + ", ".join(f"{k}={v:,}" for k, v in sizes.__dict__.items())
        + ". Numbers vary run to run by some percent; compare ratios from one run.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="mlmesh-bench-"))
    with PostgresCluster(find_pg_bin()) as postgres:
        version = subprocess.run(
            [str(find_pg_bin() / "postgres"), "--version"], capture_output=True, text=True
        ).stdout.strip()
        with MlflowServer(postgres.create_database("mlflow_bench").url("psycopg2")) as server:
            service = ServiceProcess(
                "mlmesh_experiments",
                free_port(),
                {
                    "MLMESH_EXPERIMENTS_DATABASE_URL": postgres.create_database(
                        "registry_bench"
                    ).url("asyncpg"),
                    "MLMESH_ARTIFACT_URI": f"file://{work / 'artifacts'}",
                    "MLMESH_EXPERIMENTS_LOG_LEVEL": "WARNING",
                },
                work / "experiments.log",
            ).start()
            gateway = start_gateway(work, {"experiments": service.address})
            try:
                mesh = Mlmesh(service.address, gateway.base_url)
                results = run_workload(sizes, mesh, MlflowClient(tracking_uri=server.url))
            finally:
                gateway.stop()
                service.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(results, sizes, version))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
