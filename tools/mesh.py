"""The local mesh behind `make run`: MLflow, the services and Envoy under one honcho manager.

`python -m tools.mesh run` starts everything on embedded defaults (state under `.mlmesh/`),
prints the URLs once every part is healthy (a thread of the manager checks), and stops
everything on Ctrl-C.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Message, Printer
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.envoy_config import GatewaySettings, write_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class MeshSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLMESH_", extra="ignore")

    home: Path = ROOT / ".mlmesh"
    mlflow_port: int = 5000
    tracking_port: int = 50051
    experiments_port: int = 50052
    training_port: int = 50053
    # How long `run` waits for every part to become healthy before it gives up.
    startup_timeout_s: float = 120.0


def _env(settings: MeshSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{settings.mlflow_port}")
    env.setdefault("MLMESH_TRACKING_PORT", str(settings.tracking_port))
    env.setdefault("MLMESH_EXPERIMENTS_PORT", str(settings.experiments_port))
    env.setdefault(
        "MLMESH_EXPERIMENTS_DATABASE_URL", f"sqlite+aiosqlite:///{settings.home / 'experiments.db'}"
    )
    env.setdefault("MLMESH_ARTIFACT_URI", f"file://{settings.home / 'artifacts'}")
    env.setdefault("MLMESH_TRAINING_PORT", str(settings.training_port))
    env.setdefault(
        "MLMESH_TRAINING_DATABASE_URL", f"sqlite+aiosqlite:///{settings.home / 'training.db'}"
    )
    env.setdefault("MLMESH_EXPERIMENTS_UPSTREAM", f"127.0.0.1:{settings.experiments_port}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Without job execution the MLflow server runs as 2 processes instead of 9 (PLATFORM.md).
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def processes(settings: MeshSettings) -> dict[str, str]:
    """Name -> command line of every process of the local mesh."""
    home = settings.home
    mlflow = [
        # `mlflow server`, as one process instead of two (tools/mlflow_server.py).
        *(str(BIN / "python"), "-m", "tools.mlflow_server"),
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        str(home / "mlflow-artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
    ]
    return {
        "mlflow": shlex.join(mlflow),
        "tracking": shlex.join([str(BIN / "python"), "-m", "mlmesh_tracking"]),
        "experiments": shlex.join([str(BIN / "python"), "-m", "mlmesh_experiments"]),
        "training": shlex.join([str(BIN / "python"), "-m", "mlmesh_training"]),
        "gateway": shlex.join(
            [
                str(BIN / "envoy"),
                *("-c", str(home / "envoy.yaml"), "--log-level", "warn"),
                # The access log within a second (Envoy buffers it for 10 s by default).
                *("--file-flush-interval-msec", "1000"),
            ]
        ),
    }


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def ready(say: Callable[[str], None], stop: Callable[[], None]) -> None:
    """Waits until MLflow and the gateway (with every backend) are healthy and says the URLs;
    stops the mesh when they are not healthy in time."""
    settings = MeshSettings()
    gateway = GatewaySettings()
    base = f"http://{gateway.host}:{gateway.port}"
    checks = {
        "mlflow": f"http://127.0.0.1:{settings.mlflow_port}/health",
        "gateway": f"{base}/healthz",
    }
    deadline = time.monotonic() + settings.startup_timeout_s
    pending = dict(checks)
    while pending and time.monotonic() < deadline:
        pending = {name: url for name, url in pending.items() if not _healthy(url)}
        if pending:
            time.sleep(0.5)
    if pending:
        say(f"not healthy after {settings.startup_timeout_s:g} s: {', '.join(pending)}")
        stop()
        return
    say(
        "\n".join(
            [
                "mlmesh is up:",
                f"  web UI        {base}/"
                + ("" if (gateway.ui_dir / "index.html").is_file() else " (not built: make ui)"),
                f"  REST API      {base}/api/v1/tracking/runs",
                f"  OpenAPI       {base}/api/v1/openapi.json",
                f"  health        {base}/healthz",
                f"  gRPC          {gateway.host}:{gateway.port} (mlmesh.*.v1 services)",
                f"  MLflow UI     http://127.0.0.1:{settings.mlflow_port}",
                f"  Envoy admin   http://{gateway.host}:{gateway.admin_port}",
                "Ctrl-C stops everything.",
            ]
        )
    )


def run() -> None:
    settings = MeshSettings()
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / "mlflow-artifacts").mkdir(exist_ok=True)
    env = _env(settings)
    write_config(GatewaySettings(), settings.home / "envoy.yaml")
    manager = Manager(Printer(sys.stdout))
    for name, command in processes(settings).items():
        manager.add_process(name, command, env=env, cwd=str(ROOT))
    failed = threading.Event()

    def say(text: str) -> None:
        # Through honcho's queue, so that its loop prints these lines among the others.
        for line in text.splitlines():
            manager.events.put(Message("line", line + "\n", datetime.now(), "ready", None))

    def stop() -> None:
        failed.set()
        os.kill(os.getpid(), signal.SIGTERM)  # honcho's own handler stops every process

    # A thread of this process, not a process of the mesh: about 35 MB less.
    threading.Thread(target=ready, args=(say, stop), name="ready", daemon=True).start()
    manager.loop()
    sys.exit(1 if failed.is_set() else manager.returncode)


if __name__ == "__main__":
    run()
