"""The real Envoy gateway for integration tests, on free loopback ports, with the config that
`gateway.envoy_config` renders for production."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from gateway.descriptors import load_descriptor_set, mlmesh_services
from gateway.envoy_config import GatewaySettings, write_config
from tests.helpers.net import LOOPBACK, free_port, wait_for_http

ENVOY = Path(sys.executable).parent / "envoy"
READY_TIMEOUT_S = 60.0


@dataclass
class Gateway:
    settings: GatewaySettings
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.port}"

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.settings.port}"

    def wait_healthy(self, domains: Iterable[str], timeout: float = READY_TIMEOUT_S) -> None:
        """Until `/healthz` reports `domains` SERVING (Envoy's own gRPC health checks)."""
        wanted = set(domains)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("envoy exited")
            try:
                backends = requests.get(self.base_url + "/healthz", timeout=2).json()["backends"]
                if all(backends.get(domain) == "SERVING" for domain in wanted):
                    return
            except (requests.RequestException, ValueError, KeyError):
                backends = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"backends not healthy after {timeout:g} s: {backends}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_gateway(
    workdir: Path,
    upstreams: dict[str, str],
    *,
    wait_healthy: bool = True,
    concurrency: int = 2,
    **overrides: Any,
) -> Gateway:
    """Renders a config for `upstreams` (domain -> host:port), starts Envoy, waits until ready
    and, with `wait_healthy`, until those upstreams are healthy.

    `concurrency`: Envoy's worker threads (`--concurrency`). `overrides` are GatewaySettings
    fields (auth, jwks_file, cors_origins, max_body_bytes...).
    Domains of the descriptor set missing from `upstreams` point at a closed port (never at a
    default port, where a developer's own mesh may be running).
    """
    settings = GatewaySettings(port=free_port(), admin_port=free_port(), **overrides)
    domains = {s.domain for s in mlmesh_services(load_descriptor_set(settings.descriptor))}
    settings.upstreams = {d: f"{LOOPBACK}:{free_port()}" for d in domains} | upstreams
    config = write_config(settings, workdir / "envoy.yaml")
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(ENVOY),
                "-c",
                str(config),
                "--log-level",
                "warn",
                "--disable-hot-restart",
                "--concurrency",
                str(concurrency),
                # The access log within a second (Envoy buffers it for 10 s by default).
                "--file-flush-interval-msec",
                "1000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = Gateway(settings, process, log_path)
    try:
        wait_for_http(
            f"http://{LOOPBACK}:{settings.admin_port}/ready",
            READY_TIMEOUT_S,
            alive=lambda: process.poll() is None,
        )
        if wait_healthy:
            gateway.wait_healthy(upstreams)
    except (RuntimeError, TimeoutError) as error:
        gateway.stop()
        raise RuntimeError(f"envoy did not start: {error}\n{gateway.log_tail()}") from None
    return gateway


def gateway_for(compiled: Any, workdir: Path, upstream: str, **overrides: Any) -> Gateway:
    """The gateway of the test-only service (tests/gateway/protos): `compiled` carries its
    descriptor set and OpenAPI document, `upstream` its address. No web UI unless a test
    brings one: `/` and unknown paths stay the gateway's 404."""
    overrides.setdefault("ui_dir", workdir / "no-ui")
    return start_gateway(
        workdir,
        {"gatewaytest": upstream},
        descriptor=compiled.descriptor,
        openapi=compiled.openapi,
        **overrides,
    )
