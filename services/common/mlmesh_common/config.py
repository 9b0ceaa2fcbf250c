"""Settings shared by every service, read once from the environment in `main()`."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

# The largest gRPC message a service sends or accepts (uploads go through the gateway as one).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ServerSettings(BaseSettings):
    """Where and how a gRPC server listens. Services subclass this with their own prefix."""

    model_config = SettingsConfigDict(env_prefix="MLMESH_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 0
    # Seconds in-flight calls get to finish after SIGTERM before they are cancelled.
    shutdown_grace_s: float = 10.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # Unary calls handled at once; one more is refused RESOURCE_EXHAUSTED (429). 0: no limit.
    max_in_flight: int = 0
    # Seconds a call waits for a database connection before it is refused RESOURCE_EXHAUSTED.
    database_pool_timeout_s: float = 5.0
    # After SIGTERM: seconds health reads NOT_SERVING while calls are still served, so that the
    # gateway's health checks (every 2 s) take the process out of rotation first.
    drain_delay_s: float = 0.0
    log_level: str = "INFO"
    # "json" (default, one object a line) or "console" for humans.
    log_format: str = "json"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
