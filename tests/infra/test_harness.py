"""Proves the test harness itself: the PostgreSQL cluster and the MLflow server really work."""

from __future__ import annotations

import time

import psycopg2
import pytest
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.postgres import DatabaseInfo, PostgresCluster


def _query_one(database: DatabaseInfo, sql: str) -> tuple:
    connection = psycopg2.connect(database.dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()
    finally:
        connection.close()


def test_postgres_accepts_psycopg2_connections(postgres: PostgresCluster) -> None:
    database = postgres.create_database()

    assert _query_one(database, "select 1") == (1,)
    assert _query_one(database, "show fsync") == ("off",)
    assert _query_one(database, "select inet_server_addr()::text") == ("127.0.0.1/32",)


async def test_postgres_accepts_asyncpg_connections(postgres: PostgresCluster) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    database = postgres.create_database()

    connection = await asyncpg.connect(database.libpq_url)
    try:
        assert await connection.fetchval("select 1") == 1
    finally:
        await connection.close()


def test_created_databases_are_isolated(postgres: PostgresCluster) -> None:
    first = postgres.create_database()
    second = postgres.create_database()
    connection = psycopg2.connect(first.dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("create table only_in_first (id int)")
    finally:
        connection.close()

    assert first.dbname != second.dbname
    assert _query_one(first, "select to_regclass('only_in_first') is not null") == (True,)
    assert _query_one(second, "select to_regclass('only_in_first') is not null") == (False,)


def test_urls_name_the_driver(postgres: PostgresCluster) -> None:
    database = postgres.create_database()

    assert database.url("asyncpg").startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert postgres.url(database.dbname, "psycopg2").endswith(f"/{database.dbname}")
    with pytest.raises(ValueError, match="unknown driver"):
        database.url("pg8000")


def test_dropped_database_is_gone(postgres: PostgresCluster) -> None:
    database = postgres.create_database()
    postgres.drop_database(database.dbname)

    with pytest.raises(psycopg2.OperationalError, match="does not exist"):
        psycopg2.connect(database.dsn)


def test_mlflow_server_is_healthy(mlflow_server: MlflowServer) -> None:
    response = requests.get(f"{mlflow_server.url}/health", timeout=5)

    assert response.status_code == 200


def test_mlflow_client_round_trips_a_run(mlflow_server: MlflowServer) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"harness-{time.time_ns()}")
    run = client.create_run(experiment_id, tags={"suite": "harness"})
    other_run = client.create_run(experiment_id, tags={"suite": "other"})
    run_id = run.info.run_id
    timestamp_ms = int(time.time() * 1000)

    client.log_batch(
        run_id,
        metrics=[Metric("loss", 1.0 / (step + 1), timestamp_ms, step) for step in range(50)],
        params=[Param("learning_rate", "0.1")],
        tags=[RunTag("model", "xgboost")],
    )
    client.set_terminated(run_id)
    client.set_terminated(other_run.info.run_id)

    history = client.get_metric_history(run_id, "loss")
    assert [point.step for point in history] == list(range(50))
    assert history[-1].value == pytest.approx(1.0 / 50)

    stored = client.get_run(run_id)
    assert stored.data.params == {"learning_rate": "0.1"}
    assert stored.data.tags["model"] == "xgboost"
    assert stored.data.metrics["loss"] == pytest.approx(1.0 / 50)
    assert stored.info.status == "FINISHED"

    found = client.search_runs(
        [experiment_id], filter_string="tags.suite = 'harness' and metrics.loss < 0.1"
    )
    assert [found_run.info.run_id for found_run in found] == [run_id]


def test_mlflow_artifacts_are_proxied_into_the_temporary_directory(
    mlflow_server: MlflowServer, tmp_path
) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"artifacts-{time.time_ns()}")
    run_id = client.create_run(experiment_id).info.run_id
    local_file = tmp_path / "notes.txt"
    local_file.write_text("fold scores")

    client.log_artifact(run_id, str(local_file))

    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert [artifact.path for artifact in client.list_artifacts(run_id)] == ["notes.txt"]
    stored_files = list(mlflow_server.artifacts_dir.rglob("notes.txt"))
    assert [stored.read_text() for stored in stored_files] == ["fold scores"]
