"""`python -m bench.footprint`: the local mesh's (`make run`) warm start time and memory, from its
process tree.

Starts `python -m tools.mesh run` twice on free ports with a state directory of its own (the
first start creates the databases and warms the disk cache; the second is the warm start that
is timed), waits for its "mlmesh is up" line, lets it settle, then reads every process under it
from /proc: resident memory (RSS, which counts shared pages once per process) and proportional
memory (PSS, shared pages split among their users: the sum is the mesh's real share). Writes its
own section of docs/benchmarks.md (`<!-- footprint:begin -->`)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import ROOT
from bench.cpu import PROC, _parents, _trees
from bench.sections import markers, write_section
from tests.helpers.net import free_port

SECTION = "footprint"
UP_LINE = "mlmesh is up"
START_TIMEOUT_S = 180
SETTLE_S = 10
GOAL_MB = 1_200
GOAL_START_S = 8.0


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The mesh, and the seconds until it printed that every part is healthy."""
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.mesh", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = started + START_TIMEOUT_S
    while time.perf_counter() < deadline:
        if UP_LINE in log.read_text(errors="replace"):
            return process, time.perf_counter() - started
        if process.poll() is not None:
            break
        time.sleep(0.1)
    _stop(process)
    raise RuntimeError(f"the mesh did not come up:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB from smaps_rollup; zeros for a process that is gone."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            name, *rest = line.split()
            if name in values:
                values[name] = int(rest[0])
    except (OSError, ValueError):
        pass
    return values["Rss:"], values["Pss:"]


def _component(pid: int) -> str:
    try:
        command = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = " ".join(part.decode(errors="replace") for part in command if part)
    if "ray" in text:
        # Ray's processes by role: its command names (raylet, gcs_server, ray::IDLE, ...).
        role = text.split(" ", 1)[0].rsplit("/", 1)[-1]
        if role.startswith("python"):
            role = next((p.rsplit("/", 1)[-1] for p in text.split() if p.endswith(".py")), role)
        return f"Ray: {role}"
    for marker, name in (
        ("mlmesh_training", "training service"),
        ("mlmesh_experiments", "experiments service"),
        ("mlmesh_tracking", "tracking service"),
        ("tools.mesh run", "process manager (honcho)"),
        ("envoy", "Envoy"),
        ("mlflow", "MLflow server"),
        ("uvicorn", "MLflow server"),
    ):
        if marker in text:
            return name
    return text.split(" ", 1)[0].rsplit("/", 1)[-1] or "other"


def _tree(root: int) -> dict[str, list[tuple[int, int]]]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for pid in _trees([root], children):
        found[_component(pid)].append(_memory_kb(pid))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="mlmesh-footprint-"))
    env = {
        **os.environ,
        "MLMESH_HOME": str(home),
        "MLMESH_MLFLOW_PORT": str(free_port()),
        "MLMESH_TRACKING_PORT": str(free_port()),
        "MLMESH_EXPERIMENTS_PORT": str(free_port()),
        "MLMESH_TRAINING_PORT": str(free_port()),
        "MLMESH_GATEWAY_PORT": str(free_port()),
        "MLMESH_GATEWAY_ADMIN_PORT": str(free_port()),
        "NO_PROXY": "127.0.0.1",
    }
    load = os.getloadavg()[0]
    try:
        first, cold_s = _start(env, home / "first.log")
        _stop(first)
        mesh, warm_s = _start(env, home / "warm.log")
        shutil.copy(home / "warm.log", Path(tempfile.gettempdir()) / "mlmesh-footprint-warm.log")
        try:
            time.sleep(SETTLE_S)
            tree = _tree(mesh.pid)
        finally:
            _stop(mesh)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    write_section(args.out, SECTION, _render(tree, cold_s, warm_s, load))
    print(f"first start {cold_s:.1f} s, warm start {warm_s:.1f} s; wrote {args.out}")


def _render(
    tree: dict[str, list[tuple[int, int]]], first_s: float, warm_s: float, load: float
) -> str:
    begin, end = markers(SECTION)
    rows = sorted(tree.items(), key=lambda item: -sum(pss for _, pss in item[1]))
    processes = sum(len(found) for found in tree.values())
    rss = sum(r for found in tree.values() for r, _ in found) / 1024
    pss = sum(p for found in tree.values() for _, p in found) / 1024
    met_memory = "met" if pss <= GOAL_MB else "not met"
    met_start = "met" if warm_s <= GOAL_START_S else "not met"
    lines = [
        begin,
        "## The local mesh's footprint (`make run`)",
        "",
        "`python -m bench.footprint`: `python -m tools.mesh run` on free ports with a state "
        "directory of its own, started twice; the second (warm) start is timed to its "
        f'"{UP_LINE}" line (every part healthy), then after {SETTLE_S} s every process of '
        "its tree is read from /proc. RSS counts a shared page in every process that maps it; "
        "PSS splits it among them, so the PSS sum is the mesh's memory. Load average before "
        f"the run: {load:.2f}.",
        "",
        f"- Warm start: {warm_s:.1f} s (goal ≤ {GOAL_START_S:g} s: {met_start}); first start "
        f"(databases created): {first_s:.1f} s.",
        f"- {processes} processes, {pss:,.0f} MB PSS (goal ≤ {GOAL_MB:,} MB: {met_memory}), "
        f"{rss:,.0f} MB RSS summed.",
        "",
        "| Component | processes | PSS MB | RSS MB |",
        "|---|--:|--:|--:|",
    ]
    for name, found in rows:
        lines.append(
            f"| {name} | {len(found)} | {sum(p for _, p in found) / 1024:,.0f} | "
            f"{sum(r for r, _ in found) / 1024:,.0f} |"
        )
    lines += ["", end]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
