"""Entry point: `python -m mlmesh_tracking` (or `mlmesh-tracking`) serves the tracking service."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2

from mlmesh.tracking.v1 import tracking_service_pb2, tracking_service_pb2_grpc
from mlmesh_common.config import DEFAULT_MAX_MESSAGE_BYTES
from mlmesh_common.logging import configure_logging
from mlmesh_common.server import ServiceBinding, build_server, serve
from mlmesh_tracking.config import TrackingSettings
from mlmesh_tracking.service import TrackingService
from mlmesh_tracking.storage import MlflowRunStore, RunStore
from mlmesh_tracking.transport import TrackingServicer

SERVICE_NAME = tracking_service_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name


@dataclass(frozen=True)
class Deps:
    store: RunStore
    experiment_names: tuple[str, ...] = ()
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Health the caller turns NOT_SERVING on SIGTERM; one of its own otherwise.
    health_servicer: health.aio.HealthServicer | None = None


def make_server(deps: Deps, address: str) -> tuple[grpc.aio.Server, int]:
    servicer = TrackingServicer(TrackingService(deps.store, deps.experiment_names))
    binding = ServiceBinding(
        SERVICE_NAME, tracking_service_pb2_grpc.add_TrackingServiceServicer_to_server, servicer
    )
    return build_server(
        address,
        [binding],
        max_message_bytes=deps.max_message_bytes,
        health_servicer=deps.health_servicer,
    )


async def _main(settings: TrackingSettings) -> None:
    store = MlflowRunStore(
        settings.mlflow_tracking_uri,
        timeout_s=settings.mlflow_timeout_s,
        workers=settings.mlflow_workers,
    )
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    deps = Deps(
        store, tuple(settings.experiment_names), settings.max_message_bytes, health_servicer
    )
    server, port = make_server(deps, settings.address)
    try:
        # On SIGTERM: NOT_SERVING for `drain_delay_s` while still serving, then drain.
        await serve(
            server,
            port,
            settings.shutdown_grace_s,
            "tracking",
            health_servicer=health_servicer,
            drain_delay_s=settings.drain_delay_s,
        )
    finally:
        store.close()


def main() -> None:
    settings = TrackingSettings()
    configure_logging(settings.log_level, settings.log_format)
    # The MLflow client retries a refused connection for minutes by default; the service's own
    # timeout already bounds every call, so a down server must fail fast instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.mlflow_timeout_s) or 1))
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
