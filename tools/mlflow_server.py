"""`python -m tools.mlflow_server ARGS`: `mlflow server ARGS` as one process, for the local mesh.

MLflow's CLI prepares the stores and the server's environment, then starts uvicorn as its child
and stays, only to forward signals: a second copy of MLflow in memory (about 190 MB PSS). Here
the CLI execs that uvicorn command in its own place instead, so the server keeps the CLI's pid
and gets the signals itself. Only without MLflow's job execution: with it, the CLI also starts
and watches a job runner after the server, so it runs unchanged. If MLflow no longer has the
hook this relies on, it runs unchanged too, just larger.
"""

from __future__ import annotations

import os
import sys

import mlflow.server
from mlflow.cli import cli
from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION


def _exec_in_place(cmd: list[str], *, extra_env: dict[str, str] | None = None, **_: object):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, {**os.environ, **(extra_env or {})})


def main() -> None:
    if not MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() and hasattr(mlflow.server, "_exec_cmd"):
        mlflow.server._exec_cmd = _exec_in_place
    cli(["server", *sys.argv[1:]], prog_name="mlflow")


if __name__ == "__main__":
    main()
