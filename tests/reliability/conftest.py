"""The reliability suite's infrastructure: a PostgreSQL cluster of its own (the tests stop and
start it), the experiments service as a real process on it behind the real gateway, and the
report that becomes docs/reliability.md."""

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

SECTIONS = ["database", "kill", "overload", "rate_limit", "artifacts", "rolling"]


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
    service: ServiceProcess
    gateway: Gateway
    tenant: str

    @property
    def base_url(self) -> str:
        return self.gateway.base_url

    def client(self) -> requests.Session:
        session = requests.Session()
        session.headers["x-tenant-id"] = self.tenant
        return session


@pytest.fixture
def start_mesh(faulty_postgres, tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """Starts the experiments service (extra environment as keyword arguments) on a new
    database, and the gateway in front of it."""
    started: list[tuple[ServiceProcess, Gateway]] = []

    def start(gateway_settings: dict | None = None, **env: str) -> Mesh:
        database = faulty_postgres.create_database(f"rel_{uuid.uuid4().hex[:8]}")
        service = ServiceProcess(
            "mlmesh_experiments",
            free_port(),
            {
                "MLMESH_EXPERIMENTS_DATABASE_URL": database.url("asyncpg"),
                "MLMESH_ARTIFACT_URI": f"file://{tmp_path / 'artifacts'}",
                **env,
            },
            tmp_path / "experiments.log",
        )
        service.start()
        gateway = start_gateway(
            tmp_path / "gateway", {"experiments": service.address}, **(gateway_settings or {})
        )
        started.append((service, gateway))
        return Mesh(service, gateway, f"t-{uuid.uuid4().hex[:10]}")

    yield start
    for service, gateway in started:
        gateway.stop()
        service.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls `predicate` until it holds; the time it took. A bound, not a timing assertion."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.05)
    return time.monotonic() - started
