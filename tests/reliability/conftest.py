"""The reliability suite's infrastructure: a PostgreSQL cluster of its own (the tests stop and
start it), the experiments service (or another) as real processes behind the real gateway, and
the report that becomes docs/reliability.md."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers.gateway import Gateway, start_gateway
from tests.helpers.net import free_port
from tests.helpers.postgres import PostgresCluster, PostgresUnavailable, find_pg_bin
from tests.helpers.services import ServiceProcess
from tests.reliability.report import Report

SECTIONS = [
    "database",
    "kill",
    "rolling",
    "rolling_tracking",
    "overload",
    "rate_limit",
    "artifacts",
    "mlflow",
    "training_kill",
    "training_rolling",
]


@pytest.fixture(scope="session")
def reliability_report() -> Iterator[Report]:
    report = Report(SECTIONS)
    yield report
    if report.complete():
        report.write()


@pytest.fixture(scope="session")
def faulty_postgres() -> Iterator[PostgresCluster]:
    """A cluster that tests stop and start, apart from the suite's shared one."""
    try:
        cluster = PostgresCluster(find_pg_bin())
    except PostgresUnavailable as error:
        pytest.fail(f"PostgreSQL is required: {error}", pytrace=False)
    with cluster:
        yield cluster


@dataclass
class Mesh:
    services: list[ServiceProcess]
    gateway: Gateway
    tenant: str
    domain: str = "experiments"

    @property
    def service(self) -> ServiceProcess:
        return self.services[0]

    def in_rotation(self, service: ServiceProcess) -> bool:
        """Whether the gateway's own health checks have `service` healthy."""
        admin = f"http://127.0.0.1:{self.gateway.settings.admin_port}/clusters"
        lines = requests.get(admin, timeout=5).text.splitlines()
        return f"{self.domain}::{service.address}::health_flags::healthy" in lines

    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    def client(self) -> requests.Session:
        session = requests.Session()
        session.headers["x-tenant-id"] = self.tenant
        return session


@pytest.fixture
def start_mesh(faulty_postgres, tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """Starts `replicas` processes of a service (the experiments service on a new database
    unless `domain` names another; extra environment as keyword arguments) and the gateway in
    front of them, all in its one cluster."""
    started: list[Mesh] = []

    def start(
        gateway_settings: dict | None = None,
        replicas: int = 1,
        domain: str = "experiments",
        **env: str,
    ) -> Mesh:
        if domain == "experiments":
            database = faulty_postgres.create_database(f"rel_{uuid.uuid4().hex[:8]}")
            env = {
                "MLMESH_EXPERIMENTS_DATABASE_URL": database.url("asyncpg"),
                "MLMESH_ARTIFACT_URI": f"file://{tmp_path / 'artifacts'}",
                **env,
            }
        services = [
            ServiceProcess(f"mlmesh_{domain}", free_port(), env, tmp_path / f"{domain}-{n}.log")
            for n in range(replicas)
        ]
        for service in services:
            service.start()
        upstream = ",".join(service.address for service in services)
        gateway = start_gateway(
            tmp_path / f"gateway-{len(started)}",
            {domain: upstream},
            **(gateway_settings or {}),
        )
        mesh = Mesh(services, gateway, f"t-{uuid.uuid4().hex[:10]}", domain)
        started.append(mesh)
        return mesh

    yield start
    for mesh in started:
        mesh.gateway.stop()
        for service in mesh.services:
            service.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls `predicate` until it holds; the time it took. A bound, not a timing assertion."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.05)
    return time.monotonic() - started
