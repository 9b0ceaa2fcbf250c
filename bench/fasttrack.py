"""FastTrackML, the Go reimplementation of MLflow's tracking server, as the bench's third system:
installed by the bench into a virtualenv of its own (never the project's: its wheel pins an old
MLflow), started on the bench's PostgreSQL cluster in a database of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bench import ROOT
from tests.helpers.net import LOOPBACK, free_port, wait_for_http

VERSION = "0.6.0"
# Kept between runs (git-ignored); the wheel carries the `fml` binary, which needs no Python
# package, so it installs without its dependencies.
VENV = ROOT / ".bench" / f"fasttrackml-{VERSION}"
READY_TIMEOUT_S = 60


def fml_executable() -> Path:
    """`fml` from the bench's own virtualenv, installing it on first use."""
    fml = VENV / "bin" / "fml"
    if fml.exists():
        return fml
    print(f"installing fasttrackml {VERSION} into {VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(VENV / "bin" / "python"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            f"fasttrackml=={VERSION}",
        ],
        check=True,
    )
    return fml


def fml_version() -> str:
    return VERSION


class FastTrackServer:
    """`fml server` on a free loopback port with `database_uri` (postgres://...)."""

    def __init__(self, database_uri: str, workdir: Path) -> None:
        self.database_uri = database_uri
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = workdir / "fasttrackml.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(fml_executable()),
            "server",
            "--listen-address",
            f"{LOOPBACK}:{self.port}",
            "--database-uri",
            self.database_uri,
            "--default-artifact-root",
            str(self.workdir / "fml-artifacts"),
            "--log-level",
            "warn",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        try:
            wait_for_http(
                f"{self.url}/health", READY_TIMEOUT_S, alive=lambda: process.poll() is None
            )
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n{self.log_tail()}") from error

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
