"""CPU time per process group (client, servers, Envoy, PostgreSQL) from /proc: where the time
of a request goes, without a profiler."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
GROUPS = ("client", "mlflow", "fasttrack", "service", "envoy", "postgres")


@dataclass(frozen=True)
class CpuMeter:
    """Process-tree roots of everything under test; the MLflow server is whatever else this
    process started (its `mlflow` command and the uvicorn worker under it). The service's tree
    holds all its worker processes."""

    service_pid: int
    envoy_pid: int
    postgres_pid: int
    fasttrack_pid: int

    def snapshot(self) -> dict[str, float]:
        """Cumulative CPU seconds (user + system) of each group right now."""
        parents = _parents()
        children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            children.setdefault(parent, []).append(pid)
        me = os.getpid()
        mlflow_roots = [
            pid
            for pid in children.get(me, [])
            if pid not in (self.service_pid, self.envoy_pid, self.fasttrack_pid)
        ]
        roots = {
            "client": [me],
            "mlflow": mlflow_roots,
            "fasttrack": [self.fasttrack_pid],
            "service": [self.service_pid],
            "envoy": [self.envoy_pid],
            "postgres": [self.postgres_pid],
        }
        seconds = {}
        for group, pids in roots.items():
            # The client is this process alone, not the servers it started.
            tree = set(pids) if group == "client" else _trees(pids, children)
            seconds[group] = sum(_cpu_seconds(pid) for pid in tree)
        return seconds


def per_call_ms(before: dict[str, float], after: dict[str, float], calls: int) -> dict[str, float]:
    return {group: (after[group] - before[group]) * 1000 / calls for group in GROUPS}


def _parents() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    return parents


def _trees(roots: list[int], children: dict[int, list[int]]) -> set[int]:
    found, pending = set(), list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    return found


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    # utime and stime: fields 14 and 15 of proc(5), counted from 1, state being the third.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S if fields else 0.0


def _stat_fields(pid: int) -> list[str]:
    """The fields after the command name (which may contain spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()
