"""The processes under test on loopback: one throwaway PostgreSQL cluster, a real `mlflow server`,
FastTrackML, the experiments service and the Envoy gateway, all stopped again whatever
happens."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.fasttrack import FastTrackServer
from tests.helpers.gateway import ENVOY, start_gateway
from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.net import free_port
from tests.helpers.postgres import DatabaseInfo, PostgresCluster, find_pg_bin
from tests.helpers.services import ServiceProcess


@dataclass(frozen=True)
class Stack:
    mlflow_url: str
    fasttrack_url: str
    grpc_address: str
    gateway_url: str
    # psycopg2 URLs of each system's database: seeding MLflow without its REST API, ANALYZE.
    mlflow_database_url: str
    fasttrack_database_url: str
    mlmesh_database_url: str
    # Roots of the process trees whose CPU time the report breaks down.
    service_pid: int
    envoy_pid: int
    postgres_pid: int
    fasttrack_pid: int


def scratch(cleanup: ExitStack, name: str) -> tuple[Path, PostgresCluster]:
    """A temporary folder and a started throwaway PostgreSQL cluster, both removed by
    `cleanup` (the cluster's stop is registered before its start, so that a start that fails
    half-way still cleans up)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mlmesh-{name}-"))
    cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
    postgres = PostgresCluster()
    cleanup.callback(postgres.stop)
    postgres.start()
    return workdir, postgres


@contextmanager
def running_stack() -> Iterator[Stack]:
    """Starts everything; on exit (or any error on the way) stops it in reverse order.

    Each stop is registered before its start, so a start that fails or is interrupted half-way
    still cleans up (the helpers' stop() methods are no-ops for what never started)."""
    with ExitStack() as cleanup:
        workdir, postgres = scratch(cleanup, "bench")
        mlflow_database = postgres.create_database("mlflow_bench").url("psycopg2")
        mlflow = MlflowServer(mlflow_database)
        cleanup.callback(mlflow.stop)
        mlflow.start()
        fasttrack_database = postgres.create_database("fasttrack_bench")
        fasttrack = FastTrackServer(_go_url(fasttrack_database), workdir)
        cleanup.callback(fasttrack.stop)
        fasttrack.start()
        mlmesh_database = postgres.create_database("experiments_bench")
        service = _experiments_service(mlmesh_database, workdir)
        cleanup.callback(service.stop)
        service.start()
        gateway = start_gateway(workdir, {"experiments": service.address})
        cleanup.callback(gateway.stop)
        try:
            assert fasttrack.process is not None
            yield Stack(
                mlflow.url,
                fasttrack.url,
                service.address,
                gateway.base_url,
                mlflow_database,
                fasttrack_database.url("psycopg2"),
                mlmesh_database.url("psycopg2"),
                service.process.pid,
                gateway.process.pid,
                _postmaster_pid(postgres),
                fasttrack.process.pid,
            )
        except BaseException:
            # The logs live in the work directory, which is about to be removed.
            _print_logs(
                {
                    "mlflow server": mlflow.log_tail(),
                    "fasttrackml": fasttrack.log_tail(),
                    "experiments": service.log_tail(),
                }
            )
            raise


def _print_logs(tails: dict[str, str]) -> None:
    for name, tail in tails.items():
        print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)


def _experiments_service(database: DatabaseInfo, workdir: Path) -> ServiceProcess:
    # Configured as deployed (default log level and pool), so per-request logging is measured.
    env = {
        "MLMESH_EXPERIMENTS_DATABASE_URL": database.url("asyncpg"),
        "MLMESH_ARTIFACT_URI": f"file://{workdir / 'artifacts'}",
    }
    return ServiceProcess("mlmesh_experiments", free_port(), env, workdir / "experiments.log")


def _go_url(database: DatabaseInfo) -> str:
    """The database's URL as FastTrackML (Go, pgx) takes it."""
    return f"postgres://{database.user}@{database.host}:{database.port}/{database.dbname}"


def _postmaster_pid(postgres: PostgresCluster) -> int:
    # pg_ctl daemonizes the server; its pid is the first line of postmaster.pid.
    return int((postgres.data_dir / "postmaster.pid").read_text().split()[0])


def postgres_version() -> str:
    return _version([str(find_pg_bin() / "postgres"), "--version"], r"\) (\d+\.\d+)")


def envoy_version() -> str:
    return _version([str(ENVOY), "--version"], r"/(\d+\.\d+\.\d+)/")


def _version(command: list[str], pattern: str) -> str:
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "unknown"
    match = re.search(pattern, output)
    return match.group(1) if match else "unknown"
