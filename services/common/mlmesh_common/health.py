"""A service's gRPC health from its dependencies: NOT_SERVING while one of them (its database)
cannot be reached, SERVING again once it can, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

log = structlog.get_logger("mlmesh.health")

Probe = Callable[[], Awaitable[None]]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DependencyMonitor:
    """Runs every probe each `interval_s` (each bounded by `timeout_s`) and sets the health of
    the server as a whole ("") and of `services` to SERVING when all pass, else NOT_SERVING.
    A probe that reconnects (a pool ping) is also what makes the pool recover early."""

    def __init__(
        self,
        health_servicer: health.aio.HealthServicer,
        services: Sequence[str],
        probes: Mapping[str, Probe],
        *,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._health = health_servicer
        self._names = ["", *services]
        self._probes = dict(probes)
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failing: set[str] | None = None

    async def check(self) -> set[str]:
        """Runs the probes once, sets the health, and returns the names of those that failed."""
        results = await asyncio.gather(
            *(asyncio.wait_for(probe(), self._timeout_s) for probe in self._probes.values()),
            return_exceptions=True,
        )
        failing = {
            name
            for name, result in zip(self._probes, results, strict=True)
            if isinstance(result, BaseException)
        }
        if failing != self._failing:
            if failing:
                errors = {
                    name: repr(result)
                    for name, result in zip(self._probes, results, strict=True)
                    if name in failing
                }
                log.warning("dependencies unavailable", failing=sorted(failing), errors=errors)
            elif self._failing:
                log.info("dependencies available again")
            self._failing = failing
            status = NOT_SERVING if failing else SERVING
            for name in self._names:
                await self._health.set(name, status)
        return failing

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval_s)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DependencyMonitor]:
        """Checks once (the server starts with the right status), then in the background."""
        await self.check()
        task = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
