"""Entry point: `python -m mlmesh_experiments` (or `mlmesh-experiments`) serves the registry,
after migrating its database to the latest schema."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from mlmesh.experiments.v1 import experiments_service_pb2, experiments_service_pb2_grpc
from mlmesh_common.artifacts import ArtifactStore, open_artifact_store
from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.db import create_engine
from mlmesh_common.logging import configure_logging
from mlmesh_common.server import ServiceBinding, build_server, serve
from mlmesh_experiments.config import ExperimentsSettings
from mlmesh_experiments.service import ExperimentsService
from mlmesh_experiments.storage.base import ExperimentStore
from mlmesh_experiments.storage.memory import InMemoryExperimentStore
from mlmesh_experiments.storage.migrate import migrate
from mlmesh_experiments.storage.sql import SqlExperimentStore
from mlmesh_experiments.transport import ExperimentServicer

SERVICE_NAME = experiments_service_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name


@dataclass(frozen=True)
class Deps:
    store: ExperimentStore
    artifacts: ArtifactStore
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


def make_server(deps: Deps, address: str) -> tuple[grpc.aio.Server, int]:
    servicer = ExperimentServicer(ExperimentsService(deps.store, deps.artifacts))
    binding = ServiceBinding(
        SERVICE_NAME,
        experiments_service_pb2_grpc.add_ExperimentServiceServicer_to_server,
        servicer,
    )
    return build_server(address, [binding], max_message_bytes=deps.max_message_bytes)


MEMORY_URL = "memory://"


async def open_store(settings: ExperimentsSettings) -> ExperimentStore:
    """The store `database_url` names: `memory://` (nothing kept), else SQLAlchemy, migrated."""
    if settings.database_url == MEMORY_URL:
        return InMemoryExperimentStore()
    engine = create_engine(settings.database_url, settings.database_pool_size)
    await migrate(engine)
    return SqlExperimentStore(engine)


async def _main(settings: ExperimentsSettings) -> None:
    store = await open_store(settings)
    deps = Deps(store, open_artifact_store(settings.artifact_uri), settings.max_message_bytes)
    server, port = make_server(deps, settings.address)
    try:
        await serve(server, port, settings.shutdown_grace_s, "experiments")
    finally:
        await store.close()


def main() -> None:
    settings = ExperimentsSettings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
