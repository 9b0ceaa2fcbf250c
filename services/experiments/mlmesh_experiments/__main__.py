"""Entry point: `python -m mlmesh_experiments` (or `mlmesh-experiments`) serves the registry,
after migrating its database to the latest schema, from `MLMESH_EXPERIMENTS_WORKERS` processes
on one port (PostgreSQL; one process for SQLite and memory://)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health

from mlmesh.experiments.v1 import experiments_service_pb2, experiments_service_pb2_grpc
from mlmesh_common.artifacts import ArtifactStore, open_artifact_store
from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.db import create_engine, database_error
from mlmesh_common.health import DependencyMonitor
from mlmesh_common.logging import configure_logging
from mlmesh_common.server import (
    ServiceBinding,
    build_server,
    reserved_port,
    run_workers,
    serve,
)
from mlmesh_experiments.config import ExperimentsSettings
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.base import ExperimentStore
from mlmesh_experiments.storage.memory import InMemoryExperimentStore
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from mlmesh_experiments.transport import ExperimentServicer

log = structlog.get_logger("mlmesh.experiments")

SERVICE_NAME = experiments_service_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name


@dataclass(frozen=True)
class Deps:
    store: ExperimentStore
    artifacts: ArtifactStore
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_in_flight: int = 0
    # Health the caller sets (from the database's reachability); one of its own otherwise.
    health_servicer: health.aio.HealthServicer | None = None


def make_server(
    deps: Deps, address: str, *, reuse_port: bool = False
) -> tuple[grpc.aio.Server, int]:
    servicer = ExperimentServicer(ExperimentsService(deps.store, deps.artifacts))
    binding = ServiceBinding(
        SERVICE_NAME,
        experiments_service_pb2_grpc.add_ExperimentServiceServicer_to_server,
        servicer,
    )
    return build_server(
        address,
        [binding],
        max_message_bytes=deps.max_message_bytes,
        reuse_port=reuse_port,
        health_servicer=deps.health_servicer,
        translators=[database_error],
        max_in_flight=deps.max_in_flight,
    )


MEMORY_URL = "memory://"


async def open_store(settings: ExperimentsSettings, *, migrated: bool = False) -> ExperimentStore:
    """The store `database_url` names: `memory://` (nothing kept), else SQLAlchemy, migrated
    (unless `migrated`: the parent of the worker processes migrated it once for all)."""
    if settings.database_url == MEMORY_URL:
        return InMemoryExperimentStore()
    engine = create_engine(
        settings.database_url, settings.database_pool_size, settings.database_pool_timeout_s
    )
    if not migrated:
        await migrate(engine)
    return SqlExperimentStore(engine, idempotency_ttl_s=settings.idempotency_ttl_s)


def worker_count(settings: ExperimentsSettings) -> int:
    """Several processes only where they share the data: one memory:// store per process would
    be several registries, and SQLite takes one writer at a time anyway."""
    return settings.workers if settings.database_url.startswith("postgresql") else 1


async def _main(
    settings: ExperimentsSettings,
    address: str | None = None,
    *,
    migrated: bool = False,
    reuse_port: bool = False,
) -> None:
    store = await open_store(settings, migrated=migrated)
    health_servicer = health.aio.HealthServicer()
    deps = Deps(
        store,
        open_artifact_store(settings.artifact_uri),
        settings.max_message_bytes,
        settings.max_in_flight,
        health_servicer,
    )
    server, port = make_server(deps, address or settings.address, reuse_port=reuse_port)
    # Each worker process watches the database for its own health.
    monitor = DependencyMonitor(health_servicer, [SERVICE_NAME], {"database": store.ping})
    try:
        async with monitor.running():
            await serve(
                server,
                port,
                settings.shutdown_grace_s,
                "experiments",
                health_servicer=health_servicer,
                drain_delay_s=settings.drain_delay_s,
            )
    finally:
        await store.close()


async def _migrate_once(settings: ExperimentsSettings) -> None:
    store = await open_store(settings)
    await store.close()
    log.info("database migrated", service="experiments")


def _run(settings: ExperimentsSettings, main: Coroutine[Any, Any, None]) -> None:
    """`main` to completion on a new event loop of the configured kind."""
    if settings.event_loop == "uvloop":
        # Imported here, in the worker, never in the parent of the workers: with uvloop
        # imported there, the parent sometimes never saw its workers exit (a worker killed,
        # the others stopped and reaped, the parent still waiting on their sentinels).
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main() -> None:
    settings = ExperimentsSettings()
    configure_logging(settings.log_level, settings.log_format)
    workers = worker_count(settings)
    if workers == 1:
        _run(settings, _main(settings))
        return
    # Migrations run here, once, before any worker exists; the workers only connect.
    asyncio.run(_migrate_once(settings))
    with reserved_port(settings.host, settings.port) as port:
        address = f"{settings.host}:{port}"

        def worker() -> None:
            _run(settings, _main(settings, address, migrated=True, reuse_port=True))

        # A worker that outlives its drain delay and grace period by far is stuck: killed.
        stop_timeout_s = settings.drain_delay_s + settings.shutdown_grace_s + 10
        sys.exit(run_workers(workers, worker, "experiments", stop_timeout_s=stop_timeout_s))


if __name__ == "__main__":
    main()
