"""`run_workers`, the experiments service's process supervisor, with real forked processes:
a worker that ignores the request to stop is killed once `stop_timeout_s` has passed, so the
service never hangs half-stopped."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time
    from pathlib import Path
    from mlmesh_common.server import run_workers

    marks = Path(sys.argv[1])

    def worker():
        (marks / str(os.getpid())).touch()
        if multiprocessing.current_process().name.endswith("-worker-0"):
            time.sleep(0.5)
            sys.exit(3)  # dies on its own: the others are told to stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stuck: never stops by itself
        while True:
            time.sleep(0.1)

    sys.exit(run_workers(2, worker, "test", stop_timeout_s=1.0))
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_that_does_not_stop_is_killed(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(marks)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    pids = [int(path.name) for path in marks.iterdir()]
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)
    assert "worker did not stop in time" in done.stdout + done.stderr
