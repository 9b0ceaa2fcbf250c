"""The experiments service over every store backend (in-memory, SQLite and PostgreSQL), and as
a real process behind the real Envoy gateway. One store per backend for the session; each test
works in a tenant of its own."""

from __future__ import annotations

import uuid

import pytest

from mlmesh_common.artifacts import LocalArtifactStore
from mlmesh_common.db import create_engine
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.memory import InMemoryExperimentStore
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from tests.helpers.gateway import start_gateway
from tests.helpers.postgres import backend_url


@pytest.fixture(scope="session", params=["memory", "sqlite", "postgresql"])
async def store(request, tmp_path_factory):
    if request.param == "memory":
        store = InMemoryExperimentStore()
    else:
        directory = tmp_path_factory.mktemp("db")
        engine = create_engine(backend_url(request, request.param, directory, "registry"))
        await migrate(engine)
        store = SqlExperimentStore(engine)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def service(store, tmp_path_factory) -> ExperimentsService:
    return ExperimentsService(store, LocalArtifactStore(tmp_path_factory.mktemp("artifacts")))


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def registry_gateway(registry_process, tmp_path_factory):
    gateway = start_gateway(
        tmp_path_factory.mktemp("registry-gw"), {"experiments": registry_process.address}
    )
    yield gateway
    gateway.stop()
