"""`python -m bench.service_cpu`: the experiments service's own CPU per 1,000-point log-batch,
without gRPC or the gateway: `ExperimentsService.log_batch` on the PostgreSQL store, in this
process, against a throwaway cluster. The CPU is this process's (`time.process_time`), so the
database's work is left out and what remains is the service's Python and the driver's encoding.

Each variant runs in a process of its own, in turns (`--rounds`), so that a change can be
measured against the same code without it:
- `points`: one MetricInput-like point each (log-batch's `metrics`);
- `series`: the same points as one series (log-batch's `series`);
- `--no-freeze`: without the `gc.freeze()` that the services run once they serve.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

from bench.stack import scratch
from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import create_engine
from mlmesh_experiments.entities import MetricPoint, MetricSeries
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore

POINTS = 1_000
WARMUP = 20


async def _measure(url: str, artifacts: str, shape: str, batches: int, freeze: bool) -> float:
    engine = create_engine(url)
    await migrate(engine)
    store = SqlExperimentStore(engine)
    service = ExperimentsService(store, LocalArtifactStore(artifacts))
    experiment = await service.create_experiment("bench", {"name": f"cpu-{time.time_ns()}"})
    run = await service.create_run("bench", experiment.id, "cpu")
    now = time.time_ns() // 1_000_000

    async def log(i: int) -> None:
        steps = range(i * POINTS, (i + 1) * POINTS)
        if shape == "series":
            values = [1 / (step + 1) for step in steps]
            series = [MetricSeries("loss", values, list(steps), [now] * POINTS)]
            await service.log_batch("bench", run.id, series=series)
        else:
            points = [MetricPoint("loss", 1 / (step + 1), step, now) for step in steps]
            await service.log_batch("bench", run.id, metrics=points)

    for i in range(WARMUP):
        await log(i)
    if freeze:
        gc.collect()
        gc.freeze()
    started = time.process_time()
    for i in range(WARMUP, WARMUP + batches):
        await log(i)
    spent = time.process_time() - started
    await store.close()
    return spent / batches * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="points,series,series --no-freeze")
    # Internal: one measurement in this process.
    parser.add_argument("--url")
    parser.add_argument("--artifacts")
    parser.add_argument("--shape", choices=("points", "series"), default="series")
    parser.add_argument("--no-freeze", action="store_true")
    args = parser.parse_args(argv)
    if args.url:
        ms = asyncio.run(
            _measure(args.url, args.artifacts, args.shape, args.batches, not args.no_freeze)
        )
        print(f"{ms:.3f}")
        return
    variants = [part.strip() for part in args.variants.split(",") if part.strip()]
    found: dict[str, list[float]] = {variant: [] for variant in variants}
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "service-cpu")
        for round_ in range(args.rounds):
            for variant in variants:
                shape, *flags = variant.split()
                url = postgres.create_database().url("asyncpg")
                command = [sys.executable, "-m", "bench.service_cpu", "--url", url]
                command += ["--artifacts", str(workdir), "--shape", shape, *flags]
                command += ["--batches", str(args.batches)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                ms = float(done.stdout)
                found[variant].append(ms)
                print(f"round {round_ + 1}: {variant}: {ms:.2f} ms CPU per batch", flush=True)
    print(f"\nservice CPU per {POINTS:,}-point log-batch, median of {args.rounds} rounds:")
    for variant, samples in found.items():
        print(f"  {variant}: {statistics.median(samples):.2f} ms")


if __name__ == "__main__":
    main()
