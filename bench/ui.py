"""Browser figures for the web UI: headless Debian chromium through Playwright (ui/e2e/bench.mjs)
against the built UI behind the real Envoy gateway and the experiments service on PostgreSQL.
Writes its section of docs/benchmarks.md.

- the time until a runs page shows the first rows of its first page of 100, for an experiment of
  10,000 runs with 20 metrics each;
- the time to draw one chart of a 1,000,000-point history, and the bytes that cross the wire.

Usage: python -m bench.ui [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import ROOT
from bench.clients import GrpcTracker, Point
from bench.sections import markers, write_section
from bench.stack import scratch
from gateway.envoy_config import UI_DIST
from mlmesh_common import history
from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.services import ServiceProcess

SECTION = "ui"
BEGIN, END = markers(SECTION)
SCRIPT = ROOT / "ui" / "e2e" / "bench.mjs"
HISTORY_KEY = "equity"
SEED_THREADS = 8
# The UI's chart budget (ui/src/api/sources.ts MAX_POINTS).
CHART_MAX_POINTS = 1000
GOALS = {"first_rows_ms": 500, "chart_ms": 300, "payload_bytes": 100_000}


@dataclass(frozen=True)
class Sizes:
    runs: int
    metrics: int
    points: int
    samples: int


FULL = Sizes(runs=10_000, metrics=20, points=1_000_000, samples=5)
QUICK = Sizes(runs=500, metrics=20, points=100_000, samples=2)


def seed_runs(tracker: GrpcTracker, experiment_id: str, sizes: Sizes) -> None:
    """`sizes.runs` finished-looking runs with `sizes.metrics` metrics each, through gRPC."""
    now = int(time.time() * 1000)

    def seed(index: int) -> None:
        run_id = tracker.create_run(experiment_id, f"run-{index}", {"fold": str(index % 5)})
        points = [
            Point(f"metric_{m:02d}", (index * 7919 + m * 104729) % 10007 / 10007, 0, now)
            for m in range(sizes.metrics)
        ]
        tracker.log_details(run_id, points, {"seed": str(index)}, {})

    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(seed, range(sizes.runs)))


def seed_history(tracker: GrpcTracker, run_id: str, points: int) -> None:
    """Steps 0..points-1 of a history with a spike, logged through log-batch as a training loop
    would (1,000 points a request), so that the registry builds its block pyramid as it does in
    use."""
    spike = points * 2 // 3
    for first in range(0, points, 1000):
        batch = [
            Point(
                HISTORY_KEY,
                10.0 if step == spike else 1 + math.sin(step / 20000.0) * 0.1,
                step,
                1700000000000 + step * 1000,
            )
            for step in range(first, min(first + 1000, points))
        ]
        tracker.log_batch(tracker.prepare_batch(run_id, batch))


def measure(sizes: Sizes) -> dict:
    if not (UI_DIST / "index.html").is_file():
        raise SystemExit("ui/dist has no build: run `make ui`")
    chromium = os.environ.get("MLMESH_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        raise SystemExit(f"{chromium} is missing: run `bash tools/ensure_chromium.sh`")
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "bench-ui")
        database = postgres.create_database("experiments_ui_bench")
        service = ServiceProcess(
            "mlmesh_experiments",
            free_port(),
            {
                "MLMESH_EXPERIMENTS_DATABASE_URL": database.url("asyncpg"),
                "MLMESH_ARTIFACT_URI": f"file://{workdir / 'artifacts'}",
            },
            workdir / "experiments.log",
        )
        cleanup.callback(service.stop)
        service.start()
        gateway = start_gateway(workdir, {"experiments": service.address})
        cleanup.callback(gateway.stop)

        tracker = GrpcTracker(service.address)
        cleanup.callback(tracker.close)
        started = time.perf_counter()
        experiment = tracker.create_experiment(f"ui-bench-{uuid.uuid4().hex[:8]}")
        seed_runs(tracker, experiment, sizes)
        history_run = tracker.create_run(experiment, "history", {})
        seed_history(tracker, history_run, sizes.points)
        print(f"seeded in {time.perf_counter() - started:.0f} s", flush=True)

        url = f"{gateway.base_url}/api/v1/experiments/runs/{history_run}/metrics/{HISTORY_KEY}"
        whole = requests.get(f"{url}/history", timeout=600)
        whole.raise_for_status()
        env = {
            **os.environ,
            "BASE_URL": gateway.base_url,
            "CHROMIUM": chromium,
            "BENCH_SAMPLES": str(sizes.samples),
            "BENCH_DATA": json.dumps(
                {"experiment": experiment, "historyRun": history_run, "historyKey": HISTORY_KEY}
            ),
        }
        result = subprocess.run(
            ["node", str(SCRIPT)],
            cwd=ROOT / "ui",
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"browser benchmark failed:\n{result.stdout}\n{result.stderr}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        figures["wholeHistoryBytes"] = len(whole.content)
        figures["wholeHistoryPoints"] = len(whole.json()["points"])
        return figures


def render(figures: dict, sizes: Sizes, load: float) -> str:
    first_rows = figures["firstRowsMs"]
    chart = figures["chartDrawnMs"]
    payload = figures["historyTransferBytes"]
    block = history.block_width(0, sizes.points - 1, CHART_MAX_POINTS)
    t = figures["timeline"]

    def verdict(value: float, goal: float) -> str:
        return "met" if value < goal else "not met"

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        BEGIN,
        "## Web UI in a browser",
        "",
        f"`python -m bench.ui` (part of `make bench`), {when}:"
        " headless Debian chromium driven by playwright-core against the built UI behind the real"
        " Envoy gateway and the experiments service on PostgreSQL, on this 2-core machine. Each"
        f" figure is the median of {sizes.samples} page loads in fresh browser contexts (after one"
        " warm-up load), timed from the navigation's start inside the page. Load average at the"
        f" start: {load:.1f} (other work on the machine slows every figure).",
        "",
        "| Measure | Result | Goal | |",
        "|---|---|---|---|",
        f"| runs page of an experiment with {sizes.runs:,} runs of {sizes.metrics} metrics: first"
        f" rows of the first page (100 runs) on screen | {first_rows:.0f} ms | < 500 ms |"
        f" {verdict(first_rows, GOALS['first_rows_ms'])} |",
        f"| run page with a {sizes.points:,}-point history: its chart drawn | {chart:.0f} ms |"
        f" < 300 ms | {verdict(chart, GOALS['chart_ms'])} |",
        f"| that history's bytes on the wire (`max_points=1000`: {figures['chartPoints']} points)"
        f" | {payload / 1000:.1f} kB | < 100 kB | {verdict(payload, GOALS['payload_bytes'])} |",
        "",
        f"- Runs page: {figures['rowsRendered']} rows are in the DOM (the table is virtualized);"
        f" samples {', '.join(f'{v:.0f}' for v in figures['firstRowsSamples'])} ms.",
        f"- Chart: the history request took {figures['historyRequestMs']:.0f} ms, and drawing"
        f" after its response {figures['chartFromResponseMs']:.0f} ms. The whole history"
        f" (`max_points=0`, {figures['wholeHistoryPoints']:,} points) would be"
        f" {figures['wholeHistoryBytes'] / 1e6:.1f} MB of JSON.",
        "- The history is logged through log-batch (1,000 points a request), so the registry"
        " keeps its block pyramid (`metric_buckets`) as it does in use; the chart's read takes"
        " the coarsest level that still spans two blocks per bucket"
        f" ({sizes.points:,} steps:"
        f" blocks of {block} steps, about {sizes.points // block:,} rows) instead of every point,"
        " so its cost grows with the chart, not with the history.",
        "- The page's start, from the navigation's start (medians): the HTML in at"
        f" {t['htmlEnd']} ms, the scripts in at {t['scriptsEnd']} ms and run by"
        f" {t['domContentLoaded']} ms (DOMContentLoaded); the run's request at"
        f" {t['runRequestStart']} to {t['runResponseEnd']} ms and the history's at"
        f" {t['requestStart']} to {t['responseEnd']} ms, side by side (the app starts both from the"
        " URL, `charts=` naming the chart, before it first renders); the chart drawn at"
        f" {t['drawnAt']} ms. The {t['requestStart']} ms before the history's request are the"
        " HTML and the scripts; after its answer, React renders the run page and uPlot draws."
        " Every figure grows with the machine's load, as the first-rows figure does.",
        END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 runs, 100,000 points")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load = os.getloadavg()[0]
    figures = measure(sizes)
    write_section(args.out, SECTION, render(figures, sizes, load))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
