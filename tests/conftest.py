"""Session-wide infrastructure for the whole suite: a real PostgreSQL, a real MLflow server, the
experiments service (the registry other services write to) and the training service."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.net import free_port
from tests.helpers.postgres import PostgresCluster, PostgresUnavailable, find_pg_bin
from tests.helpers.services import ServiceProcess
from tests.helpers.training import training_env


def _running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster; tests create their own databases on it."""
    try:
        bin_dir = find_pg_bin()
        cluster = PostgresCluster(bin_dir)
    except PostgresUnavailable as error:
        # CI must exercise PostgreSQL: its absence there is a broken machine, not a skip.
        if _running_in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {error}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable ({error}); run tools/ensure_postgres.sh")
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def mlflow_server(postgres: PostgresCluster) -> Iterator[MlflowServer]:
    """A real `mlflow server` backed by its own database on the `postgres` cluster."""
    database = postgres.create_database("mlflow")
    with MlflowServer(database.url("psycopg2")) as server:
        yield server


@pytest.fixture(scope="session")
def registry_process(postgres, tmp_path_factory):
    """The experiments service as a real process on PostgreSQL with a local artifact store."""
    root = tmp_path_factory.mktemp("registry")
    database = postgres.create_database(f"registry_e2e_{uuid.uuid4().hex[:8]}")
    process = ServiceProcess(
        "mlmesh_experiments",
        free_port(),
        {
            "MLMESH_EXPERIMENTS_DATABASE_URL": database.url("asyncpg"),
            "MLMESH_ARTIFACT_URI": f"file://{root / 'artifacts'}",
        },
        root / "experiments.log",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def training_process(postgres, mlflow_server, registry_process, tmp_path_factory):
    """The training service as a real process: PostgreSQL, local Ray, the real MLflow server
    and the experiments service."""
    root = tmp_path_factory.mktemp("training")
    process = ServiceProcess(
        "mlmesh_training",
        free_port(),
        training_env(postgres, mlflow_server, registry_process, root),
        root / "training.log",
    )
    process.start(timeout_s=120)
    yield process
    process.stop()
