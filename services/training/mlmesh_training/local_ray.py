"""The local Ray of a training service given no cluster: a Ray head in a process of its own
(`python -m mlmesh_training.local_ray`), which the service joins as a driver, as it would a
cluster.

Why a process of its own: `ray.init(address="local")` forks Ray's processes with a Python
`preexec_fn`, and a child forked from the serving process, with gRPC's threads running, could
deadlock before it execs (on a lock another thread held at the fork), so the job waited on a Ray
that never came up. This process starts Ray while it is still single-threaded, prints the
cluster's address on its stdout and keeps Ray until its stdin closes: the service closes it on
shutdown, and the kernel does when the service dies, so no Ray outlives the service."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

STOP_TIMEOUT_S = 5.0


class HeadFailed(RuntimeError):
    """The head process exited, or gave no address in time."""


class LocalHead:
    """The head process, seen from the service."""

    def __init__(self, process: subprocess.Popen[bytes], address: str) -> None:
        self.process = process
        self.address = address

    @classmethod
    def start(cls, num_cpus: int | None, timeout_s: float) -> LocalHead:
        """Starts the head and waits for its address. No Python runs between fork and exec
        (no `preexec_fn`), so this is safe from a threaded process. It runs in a session of
        its own: a signal to the service's process group (Ctrl-C, honcho) reaches the service
        alone, which drains its jobs on the Ray still running and then closes the head's stdin.
        Killed with its group, Ray's driver in the service aborted the process instead."""
        command = [sys.executable, "-m", "mlmesh_training.local_ray"]
        if num_cpus is not None:
            command += ["--num-cpus", str(num_cpus)]
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert process.stdout is not None
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([process.stdout], [], [], left)[0]:
                _end(process)
                raise HeadFailed(f"the local Ray gave no address in {timeout_s:g} s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                _end(process)
                raise HeadFailed(f"the local Ray exited with status {process.returncode}")
            line += chunk
        return cls(process, json.loads(line)["address"])

    def stop(self, timeout_s: float) -> bool:
        """Closes the head's stdin, which stops its Ray; False when it was still running after
        `timeout_s` (then it is killed: Ray's processes die with it, by their fate-sharing)."""
        return _end(self.process, timeout_s)


def _end(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> bool:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
    try:
        process.wait(timeout_s)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False


def _stop_ray_and_exit(*_: object) -> None:
    import ray

    # ray.shutdown blocks for long when a signal to the process group killed the node first.
    stopping = threading.Thread(target=ray.shutdown, daemon=True)
    stopping.start()
    stopping.join(STOP_TIMEOUT_S)
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description="a local Ray head for the training service")
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args()
    # The address line is this process's only stdout; Ray's own output goes to stderr.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    # The service decides when Ray stops (it drains jobs on SIGINT/SIGTERM); SIGTERM to this
    # process alone stops Ray at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_ray_and_exit)
    import ray

    context = ray.init(
        address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False
    )
    try:
        answer.write(json.dumps({"address": context.address_info["gcs_address"]}) + "\n")
        answer.flush()
    except BrokenPipeError:  # the service is gone already
        _stop_ray_and_exit()
    while os.read(0, 4096):  # until the service closes stdin, or dies
        pass
    _stop_ray_and_exit()


if __name__ == "__main__":
    main()
