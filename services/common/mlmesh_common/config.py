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
    log_level: str = "INFO"
    # "json" (default, one object a line) or "console" for humans.
    log_format: str = "json"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
