"""Runs an mlmesh service as a real subprocess on a free port, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ServiceProcess:
    """`python -m <module>` on 127.0.0.1:`port` (`MLMESH_<SERVICE>_HOST/PORT`) with `env`,
    ready once its gRPC health check says SERVING."""

    def __init__(self, module: str, port: int, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        prefix = "MLMESH_" + module.removeprefix("mlmesh_").upper()
        self._env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(port),
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        log = self.log_path.open("ab")  # a restarted process appends
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.module} exited early:\n{self.log_tail()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.module} not healthy in {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def kill(self) -> int:
        """SIGKILL to the process group: the process and its workers die at once, in the
        middle of whatever they were doing."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def health(self, service: str = "", timeout_s: float = 1.0) -> str:
        """The gRPC health status name (SERVING, NOT_SERVING...), or UNREACHABLE."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
                )
            except grpc.RpcError:
                return "UNREACHABLE"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
