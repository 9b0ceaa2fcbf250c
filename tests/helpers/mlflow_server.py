"""A real `mlflow server` subprocess for tests: one worker on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from tests.helpers.net import LOOPBACK, free_port, wait_for_http

# MLflow 3.17 answers /health after 12-20 s on the project's machines (migrations included).
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 10
LOG_TAIL_LINES = 60


def mlflow_executable() -> str:
    """The `mlflow` command installed beside this interpreter (the project's virtualenv)."""
    beside_python = Path(sys.executable).parent / "mlflow"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("mlflow")
    if found is None:
        raise RuntimeError("no `mlflow` executable; run `make install`")
    return found


def sqlite_backend_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


class MlflowServer:
    """`mlflow server` with its artifacts proxied into a temporary directory.

    `backend_store_uri` is a SQLAlchemy URL with an explicit driver
    (`postgresql+psycopg2://...`) or `sqlite:///...`; None means a SQLite file in the temporary
    directory. Use as a context manager, or call start() and stop().
    """

    def __init__(self, backend_store_uri: str | None = None, *, port: int | None = None) -> None:
        self.backend_store_uri = backend_store_uri
        self.host = LOOPBACK
        self.port = port
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("MLflow server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self._require_workdir() / "mlflow-server.log"

    @property
    def artifacts_dir(self) -> Path:
        return self._require_workdir() / "artifacts"

    def start(self, timeout: float = READY_TIMEOUT_S) -> Self:
        if self._process is not None:
            raise RuntimeError("MLflow server already started")
        if self.backend_store_uri is not None:
            _check_database_reachable(self.backend_store_uri)
        self.workdir = Path(tempfile.mkdtemp(prefix="mlmesh-mlflow-"))
        self.artifacts_dir.mkdir()
        self.port = self.port or free_port(self.host)
        backend = self.backend_store_uri or sqlite_backend_uri(self.workdir / "mlflow.db")
        command = [
            mlflow_executable(),
            "server",
            "--backend-store-uri",
            backend,
            # Artifacts go through the server (mlflow-artifacts:/), as in a deployment, and land
            # in the temporary directory.
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
            # One uvicorn process: no supervisor, and no ~40 ms keep-alive penalty that
            # multi-worker uvicorn adds to small requests.
            "--workers",
            "1",
        ]
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._environment(),
                # Its own process group, so stop() reaches the uvicorn child too.
                start_new_session=True,
            )
        try:
            wait_for_http(f"{self.url}/health", timeout, alive=self._is_running)
        except (RuntimeError, TimeoutError) as error:
            exit_code = self._process.poll()
            log_tail = self.log_tail()
            self.stop()
            state = "still running" if exit_code is None else f"exit code {exit_code}"
            raise RuntimeError(
                f"MLflow server at {self.url} did not become healthy ({error}; {state}).\n"
                f"--- mlflow server log (tail) ---\n{log_tail}"
            ) from None
        return self

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers, and remove the temporary dir."""
        process, self._process = self._process, None
        if process is not None:
            _terminate_group(process, STOP_TIMEOUT_S)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # An ambient tracking URI would make the server's own client calls go elsewhere.
        env.pop("MLFLOW_TRACKING_URI", None)
        env.update(
            {
                # Without this MLflow starts a job runner and 7 worker processes (~2.3 GB).
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # No usage telemetry: the test machines have no internet to send it to.
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise RuntimeError("MLflow server not started")
        return self.workdir


def _check_database_reachable(backend_store_uri: str) -> None:
    """Fail in milliseconds: MLflow itself retries an unreachable database for minutes."""
    if not backend_store_uri.startswith("postgresql"):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(backend_store_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as error:
        raise RuntimeError(f"MLflow backend store unreachable: {error}") from None
    finally:
        engine.dispose()


def _terminate_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    # The uvicorn child can outlive the `mlflow` parent; the group id is the parent's pid.
    deadline = time.monotonic() + timeout
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_group(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=timeout)


def _signal_group(group_id: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group_id, signum)


def _group_alive(group_id: int) -> bool:
    try:
        os.killpg(group_id, 0)
    except ProcessLookupError:
        return False
    return True
