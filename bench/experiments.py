"""`make bench`: the experiments service over gRPC and REST against a real `mlflow server` and
FastTrackML, same PostgreSQL cluster, same workload; writes docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import mlflow

from bench import ROOT
from bench.clients import FastTrackTracker, GrpcTracker, MlflowTracker, RestTracker
from bench.cpu import CpuMeter
from bench.fasttrack import fml_version
from bench.measure import Budget
from bench.report import Environment, render
from bench.sections import existing_section
from bench.stack import Stack, envoy_version, postgres_version, running_stack
from bench.workload import OPERATIONS, Row, Sizes, Systems, run_workload

# Counts are upper bounds; the time budgets keep the full run under ~5 minutes on 2 cores.
FULL = Sizes(
    label="full",
    create_run=Budget(iterations=200, seconds=6),
    log_batch=Budget(iterations=200, seconds=12),
    log_metric=Budget(iterations=300, seconds=6),
    get_run=Budget(iterations=300, seconds=6),
    search=Budget(iterations=200, seconds=10, warmup=2),
    history=Budget(iterations=100, seconds=12, warmup=2),
    concurrent_s=12,
    search_runs=5_000,
    history_points=10_000,
)
QUICK = Sizes(
    label="quick",
    create_run=Budget(iterations=10, seconds=1, minimum=3, warmup=1),
    log_batch=Budget(iterations=3, seconds=1, minimum=3, warmup=1),
    log_metric=Budget(iterations=10, seconds=1, minimum=3, warmup=1),
    get_run=Budget(iterations=10, seconds=1, minimum=3, warmup=1),
    search=Budget(iterations=3, seconds=1, minimum=3, warmup=1),
    history=Budget(iterations=3, seconds=1, minimum=3, warmup=1),
    concurrent_s=1,
    search_runs=750,
    history_points=2_000,
)


DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (< 1 min)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="the Markdown report to (re)write (default: docs/benchmarks.md)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=(
            "comma-separated operations to run, of: " + ", ".join(OPERATIONS) + " (default: all;"
            " needs --out, as a partial report must not replace docs/benchmarks.md)"
        ),
    )
    args = parser.parse_args(argv)
    args.only = frozenset(filter(None, (part.strip() for part in args.only.split(","))))
    unknown = sorted(args.only - set(OPERATIONS))
    if unknown:
        parser.error(f"unknown operations: {', '.join(unknown)}")
    if args.only and args.out == DEFAULT_OUT:
        parser.error("--only writes a partial report: give --out")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    _prepare_process()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with running_stack() as stack:
        rows = _measure_all(stack, sizes, args.only)
        workers = len(_children(stack.service_pid))
    elapsed = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = render(rows, describe_environment(load_before, workers), sizes, elapsed)
    # bench.tuning, bench.statistics, bench.ui, bench.gateway_hop, bench.footprint and
    # bench.profile own their sections; "analysis" is written by hand (what stands in the way,
    # what was tried).
    previous = args.out.read_text() if args.out.exists() else ""
    for name in ("analysis", "tuning", "statistics", "ui", "gateway", "footprint", "profile"):
        kept = existing_section(previous, name)
        if kept:
            report = report.rstrip("\n") + "\n\n" + kept
    args.out.write_text(report)
    print(f"wrote {args.out} ({elapsed:.0f} s)")


def _measure_all(stack: Stack, sizes: Sizes, only: frozenset[str]) -> list[Row]:
    systems = Systems(
        {
            "mlflow": lambda: MlflowTracker(stack.mlflow_url),
            "fasttrack": lambda: FastTrackTracker(stack.fasttrack_url),
            "grpc": lambda: GrpcTracker(stack.grpc_address),
            "rest": lambda: RestTracker(stack.gateway_url),
        },
        stack.mlflow_database_url,
        stack.fasttrack_database_url,
        stack.mlmesh_database_url,
        CpuMeter(stack.service_pid, stack.envoy_pid, stack.postgres_pid, stack.fasttrack_pid),
    )
    try:
        return run_workload(systems, sizes, only)
    finally:
        systems.grpc.close()
        systems.rest.close()
        systems.fasttrack.close()


def _prepare_process() -> None:
    # SIGTERM (a killed `make`) must unwind through the cleanup, not skip it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # Loopback only, no telemetry: the machine may have neither a proxy nor the internet.
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"]))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    sys.exit(128 + signum)


def _children(pid: int) -> list[int]:
    """The experiments service's worker processes (none: it serves from its own process)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def describe_environment(load_before: float, service_workers: int) -> Environment:
    return Environment(
        cores=len(os.sched_getaffinity(0)),
        cpu=_cpu_model(),
        python=platform.python_version(),
        postgres=postgres_version(),
        mlflow=mlflow.__version__,
        fasttrack=fml_version(),
        envoy=envoy_version(),
        commit=_commit(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_before=load_before,
        service_workers=max(service_workers, 1),
        nice=os.nice(0),
    )


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else "unknown CPU"


def _commit() -> str:
    """The checked-out commit, marked when the working tree differs from it."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"
    return f"{commit} + local changes" if dirty else commit


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()


if __name__ == "__main__":
    main()
