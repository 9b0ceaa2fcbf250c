"""Configuration of the experiments service, from `MLMESH_EXPERIMENTS_*` variables."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from mlmesh_common.config import ServerSettings


class ExperimentsSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="MLMESH_EXPERIMENTS_", extra="ignore")

    port: int = 50052
    database_url: str = "sqlite+aiosqlite:///.mlmesh/experiments.db"
    # Connections per service process (PostgreSQL); SQLite uses one writer anyway.
    database_pool_size: int = 10
    # Server processes sharing the port (SO_REUSEPORT), one asyncio loop each: PostgreSQL only
    # (each has its own pool of `database_pool_size`); SQLite and memory:// always use one.
    workers: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)), ge=1)
    # The asyncio event loop of each server process: "uvloop" (libuv; less time per call in
    # the loop's own Python) or "asyncio" (the standard library's).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # How long an idempotency key's first answer is kept (and replayed to retries), per tenant.
    idempotency_ttl_s: float = 24 * 3600
    # file://DIR (relative to the working directory) or s3://bucket/prefix (+ AWS_ENDPOINT_URL).
    artifact_uri: str = Field(
        "file://.mlmesh/artifacts",
        validation_alias=AliasChoices("MLMESH_ARTIFACT_URI", "MLMESH_EXPERIMENTS_ARTIFACT_URI"),
    )
