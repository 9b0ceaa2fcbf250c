"""A real multi-process Ray cluster for tests: `ray start --block` nodes in their own process
groups, with token authentication and dead nodes noticed in seconds."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
# Token authentication, as a deployed cluster has it (one token per test run), and dead nodes
# noticed in seconds rather than the default half minute.
RAY_ENV = {
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
}


class RayNode:
    """One `ray start --block` process: killing its process group kills the node."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env={**os.environ, **RAY_ENV},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def alive_nodes(address: str) -> dict[str, float]:
    """node id -> CPUs of the cluster's live nodes, asked from a separate driver; empty while
    the head is not up yet."""
    script = (
        "import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False);"
        "print(json.dumps({n['NodeID']: n['Resources'].get('CPU', 0) "
        "for n in ray.nodes() if n['Alive']}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script, address],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **RAY_ENV},
        )
    except subprocess.TimeoutExpired:  # a driver can hang on a head that is still starting
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}


def wait_for_head(head: RayNode, address: str, timeout_s: float = 180) -> dict[str, float]:
    """Until drivers can connect to the head at `address`; its live nodes then."""
    deadline = time.monotonic() + timeout_s
    # `ray start` reports the node up once its processes are; only then can drivers connect.
    while "Ray runtime started" not in head.log.read_text(errors="replace"):
        assert head.process.poll() is None, head.log.read_text()
        assert time.monotonic() < deadline, "the head node never came up"
        time.sleep(0.5)
    while not (nodes_up := alive_nodes(address)):
        assert head.process.poll() is None, head.log.read_text()
        assert time.monotonic() < deadline, "the head node never came up"
        time.sleep(1)
    return nodes_up
