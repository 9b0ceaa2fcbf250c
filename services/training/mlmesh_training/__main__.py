"""Entry point: `python -m mlmesh_training` (or `mlmesh-training`) serves the training service,
after migrating its database and joining the configured Ray cluster (a local Ray starts with
the first job instead); it takes over the tasks whose replica died or handed them over
(tasks.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health

from mlmesh.training.v1 import training_service_pb2, training_service_pb2_grpc
from mlmesh_common.artifacts import open_artifact_store
from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.db import create_engine, database_error, ping
from mlmesh_common.health import DependencyMonitor
from mlmesh_common.logging import configure_logging
from mlmesh_common.server import ServiceBinding, build_server, serve
from mlmesh_training import engine, tuning
from mlmesh_training.config import TrainingSettings
from mlmesh_training.lineage import ExperimentsRecorder, MlflowRecorder, detect_git_commit
from mlmesh_training.service import TrainingService
from mlmesh_training.storage.migrate import migrate
from mlmesh_training.storage.sql import SqlTrainingStore
from mlmesh_training.tasks import Leases, replica_name
from mlmesh_training.transport import TrainingServicer, task_resumer

log = structlog.get_logger("mlmesh.training")
SERVICE_NAME = training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name


@dataclass(frozen=True)
class Deps:
    service: TrainingService
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_in_flight: int = 0
    # Health the caller sets (from the database's reachability); one of its own otherwise.
    health_servicer: health.aio.HealthServicer | None = None


def make_server(deps: Deps, address: str) -> tuple[grpc.aio.Server, int]:
    binding = ServiceBinding(
        SERVICE_NAME,
        training_service_pb2_grpc.add_TrainingServiceServicer_to_server,
        TrainingServicer(deps.service),
    )
    return build_server(
        address,
        [binding],
        max_message_bytes=deps.max_message_bytes,
        health_servicer=deps.health_servicer,
        translators=[database_error],
        max_in_flight=deps.max_in_flight,
    )


async def _main(settings: TrainingSettings) -> bool:
    """Serves until SIGTERM; True when everything, Ray included, shut down cleanly."""
    db = create_engine(
        settings.database_url, settings.database_pool_size, settings.database_pool_timeout_s
    )
    await migrate(db)
    store = SqlTrainingStore(db)
    studies = await asyncio.to_thread(
        tuning.open_storage, settings.study_storage_url or tuning.sync_url(settings.database_url)
    )
    engine.start_ray(settings.ray_address, settings.ray_num_cpus)
    mlflow = MlflowRecorder(
        settings.mlflow_tracking_uri, settings.mlflow_experiment, settings.mlflow_timeout_s
    )
    experiments = ExperimentsRecorder(settings.experiments_address)
    service = TrainingService(
        store,
        open_artifact_store(settings.artifact_uri),
        mlflow,
        experiments,
        settings.git_commit or detect_git_commit(),
        tuning.Tuner(studies, settings.tune_heartbeat_s),
        leases=Leases(
            owner=settings.replica_id or replica_name(),
            lease_s=settings.task_lease_s,
            heartbeat_s=settings.task_heartbeat_s,
            scan_s=settings.task_scan_s,
            max_attempts=settings.task_max_attempts,
        ),
    )
    service.tasks.start(task_resumer(service))
    health_servicer = health.aio.HealthServicer()
    deps = Deps(service, settings.max_message_bytes, settings.max_in_flight, health_servicer)
    server, port = make_server(deps, settings.address)
    monitor = DependencyMonitor(health_servicer, [SERVICE_NAME], {"database": lambda: ping(db)})
    try:
        async with monitor.running():
            await serve(
                server,
                port,
                settings.shutdown_grace_s,
                "training",
                health_servicer=health_servicer,
                drain_delay_s=settings.drain_delay_s,
                on_stopping=service.tasks.stop_taking_over,
            )
    finally:
        await service.tasks.shutdown()
        await experiments.close()
        mlflow.close()
        await store.close()
    return engine.stop_ray(settings.ray_shutdown_timeout_s)


def main() -> None:
    settings = TrainingSettings()
    configure_logging(settings.log_level, settings.log_format)
    if not asyncio.run(_main(settings)):
        log.warning(
            "ray did not shut down in time; exiting", timeout_s=settings.ray_shutdown_timeout_s
        )
    # Everything is closed: skip the interpreter's teardown. Ray's exit hook would block again
    # on a dead local node, and once a job ran on a Ray this process joined by address, the
    # teardown's garbage collection can crash (SIGABRT in gc_collect_main, finalize_modules).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
