"""Entry point: `python -m mlmesh_experiments` (or `mlmesh-experiments`) serves the registry,
after migrating its database to the latest schema, from `MLMESH_EXPERIMENTS_WORKERS` processes
on one port (PostgreSQL; one process for SQLite and memory://)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import grpc
import structlog

from mlmesh.experiments.v1 import experiments_service_pb2, experiments_service_pb2_grpc
from mlmesh_common.artifacts import ArtifactStore, open_artifact_store
from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.db import create_engine
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
        address, [binding], max_message_bytes=deps.max_message_bytes, reuse_port=reuse_port
    )


MEMORY_URL = "memory://"


async def open_store(settings: ExperimentsSettings, *, migrated: bool = False) -> ExperimentStore:
    """The store `database_url` names: `memory://` (nothing kept), else SQLAlchemy, migrated
    (unless `migrated`: the parent of the worker processes migrated it once for all)."""
    if settings.database_url == MEMORY_URL:
        return InMemoryExperimentStore()
    engine = create_engine(settings.database_url, settings.database_pool_size)
    if not migrated:
        await migrate(engine)
    return SqlExperimentStore(engine)


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
    deps = Deps(store, open_artifact_store(settings.artifact_uri), settings.max_message_bytes)
    server, port = make_server(deps, address or settings.address, reuse_port=reuse_port)
    try:
        await serve(server, port, settings.shutdown_grace_s, "experiments")
    finally:
        await store.close()


async def _migrate_once(settings: ExperimentsSettings) -> None:
    store = await open_store(settings)
    await store.close()
    log.info("database migrated", service="experiments")


def main() -> None:
    settings = ExperimentsSettings()
    configure_logging(settings.log_level, settings.log_format)
    workers = worker_count(settings)
    if workers == 1:
        asyncio.run(_main(settings))
        return
    # Migrations run here, once, before any worker exists; the workers only connect.
    asyncio.run(_migrate_once(settings))
    with reserved_port(settings.host, settings.port) as port:
        address = f"{settings.host}:{port}"

        def worker() -> None:
            asyncio.run(_main(settings, address, migrated=True, reuse_port=True))

        sys.exit(run_workers(workers, worker, "experiments"))


if __name__ == "__main__":
    main()
