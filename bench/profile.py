"""`python -m bench.profile`: where the experiments service's own Python time goes per request.

py-spy (not a project dependency: `.venv/bin/pip install py-spy` first) samples one service
process (MLMESH_EXPERIMENTS_WORKERS=1) while one gRPC client repeats one operation: create run,
log-metric, get run, search, log-batch. The section it writes into docs/benchmarks.md
(`<!-- profile:begin -->`) lists each operation's top frames by inclusive and by own time."""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench import ROOT
from bench.clients import GrpcTracker, Point
from bench.sections import markers, write_section
from bench.seed import log_run_details, search_runs, seed_api, settle
from bench.stack import _experiments_service, scratch
from bench.workload import SEARCH_FILTER, SEARCH_LIMIT

SECTION = "profile"
PY_SPY = Path(sys.executable).parent / "py-spy"
TOP = 12


def _profile(pid: int, seconds: float, call, out: Path) -> tuple[dict[str, int], int]:
    """Collapsed stacks ("frame;frame;... count") of `pid` while `call` runs in a loop."""
    stop = threading.Event()
    calls = 0

    def loop() -> None:
        nonlocal calls
        while not stop.is_set():
            call()
            calls += 1

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        subprocess.run(
            [
                *(str(PY_SPY), "record", "--pid", str(pid), "--format", "raw"),
                *("--duration", str(int(seconds)), "--rate", "500", "--nonblocking"),
                *("--output", str(out)),
            ],
            check=True,
            capture_output=True,
        )
    finally:
        stop.set()
        worker.join()
    stacks: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        stacks[stack] = stacks.get(stack, 0) + int(count)
    return stacks, calls


def _frame(frame: str) -> str:
    """`function (path:line)` with the path cut to what follows site-packages or services/."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "services/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    path = where.rsplit(":", 1)[0]
    return f"`{name}` ({path})"


def _tops(stacks: dict[str, int]) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, count in stacks.items():
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("`thread")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return inclusive.most_common(TOP * 3), own.most_common(TOP), total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        sys.exit(f"{PY_SPY} is missing: `.venv/bin/pip install py-spy` first")
    os.environ["MLMESH_EXPERIMENTS_WORKERS"] = "1"
    load = os.getloadavg()[0]
    results = {}
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "profile")
        database = postgres.create_database("profile")
        service = _experiments_service(database, workdir)
        cleanup.callback(service.stop)
        service.start()
        assert service.process is not None
        grpc = GrpcTracker(service.address)
        cleanup.callback(grpc.close)
        experiment = grpc.create_experiment(f"profile-{time.time_ns()}")
        run_id = grpc.create_run(experiment, "details", {})
        log_run_details(grpc, run_id)
        now = time.time_ns() // 1_000_000
        search_experiment = grpc.create_experiment(f"profile-search-{time.time_ns()}")
        seed_api(lambda: GrpcTracker(service.address), search_experiment, search_runs(5_000))
        settle([database.url("psycopg2")])
        batch_run = grpc.create_run(experiment, "batches", {})
        steps = iter(range(0, 10**9, 1_000))

        def log_batch() -> None:
            first = next(steps)
            points = [Point("loss", 0.5, s, now) for s in range(first, first + 1_000)]
            grpc.log_batch(grpc.prepare_batch(batch_run, points))

        metric_steps = iter(range(10**9))

        def log_metric() -> None:
            step = next(metric_steps)
            grpc.log_metric(batch_run, Point("lr", 1 / (step + 1), step, now + step))

        names = iter(range(10**9))

        def create_run() -> None:
            grpc.create_run(experiment, f"run-{next(names)}", {"source": "bench"})

        operations = {
            "create run (1 tag)": create_run,
            "log-metric, 1 point": log_metric,
            "get run (20 params, 20 tags, 50 metrics)": lambda: grpc.get_run(run_id),
            "search 5,000 runs, 100 returned, include_total=false": lambda: grpc.search(
                search_experiment, SEARCH_FILTER, SEARCH_LIMIT
            ),
            "log-batch, 1,000 points": log_batch,
        }
        for name, call in operations.items():
            stacks, calls = _profile(
                service.process.pid, args.seconds, call, workdir / "stacks.txt"
            )
            results[name] = (_tops(stacks), calls)
            print(f"{name}: {calls} calls profiled")
    write_section(args.out, SECTION, _render(results, load, args.seconds))
    print(f"wrote the {SECTION} section of {args.out}")


def _plumbing(frame: str) -> bool:
    """Frames every sample passes through (the loop, the thread, the entry point)."""
    return any(
        part in frame
        for part in (
            *("(asyncio/", "(uvloop/", "(<frozen", "(threading.py)", "(selectors.py)", "(runpy"),
            "(mlmesh_experiments/__main__.py)",
        )
    )


def _render(results, load: float, seconds: float) -> str:
    begin, end = markers(SECTION)
    lines = [
        begin,
        "## Where the service's Python time goes",
        "",
        "`python -m bench.profile` (needs `.venv/bin/pip install py-spy`): py-spy samples the "
        "experiments service (one process, PostgreSQL) at 500 Hz for "
        f"{seconds:g} s while one gRPC client repeats the operation; shares are of the "
        "samples in which the service's threads were running Python or waiting inside it "
        "(idle waits in the event loop's selector included). Load average before the run: "
        f"{load:.2f}.",
    ]
    for name, ((inclusive, own, total), calls) in results.items():
        lines += [
            "",
            f"### {name} ({calls} calls, {total} samples)",
            "",
            "| inclusive | frame (the event loop's own frames left out) | | own | frame |",
            "|--:|---|---|--:|---|",
        ]
        inclusive = [(f, c) for f, c in inclusive if not _plumbing(f)][:TOP]
        for i in range(TOP):
            left = (
                (f"{inclusive[i][1] / total:.0%}", inclusive[i][0])
                if i < len(inclusive)
                else ("", "")
            )
            right = (f"{own[i][1] / total:.0%}", own[i][0]) if i < len(own) else ("", "")
            lines.append(f"| {left[0]} | {left[1]} | | {right[0]} | {right[1]} |")
    lines += ["", end]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
