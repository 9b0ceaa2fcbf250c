"""Session-wide infrastructure for the whole suite: a real PostgreSQL and a real MLflow server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.postgres import PostgresCluster, PostgresUnavailable, find_pg_bin


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
