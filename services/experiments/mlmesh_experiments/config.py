"""Configuration of the experiments service, from `MLMESH_EXPERIMENTS_*` variables."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from mlmesh_common.config import ServerSettings


class ExperimentsSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="MLMESH_EXPERIMENTS_", extra="ignore")

    port: int = 50052
    database_url: str = "sqlite+aiosqlite:///.mlmesh/experiments.db"
    # Connections per service process (PostgreSQL); SQLite uses one writer anyway.
    database_pool_size: int = 10
    # file://DIR (relative to the working directory) or s3://bucket/prefix (+ AWS_ENDPOINT_URL).
    artifact_uri: str = Field(
        "file://.mlmesh/artifacts",
        validation_alias=AliasChoices("MLMESH_ARTIFACT_URI", "MLMESH_EXPERIMENTS_ARTIFACT_URI"),
    )
