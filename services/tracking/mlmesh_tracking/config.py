"""Tracking service settings, read once from the environment by `main()`."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from mlmesh_common.config import ServerSettings


class TrackingSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="MLMESH_TRACKING_", extra="ignore")

    port: int = 50051
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MLMESH_TRACKING_MLFLOW_TRACKING_URI"),
    )
    # Comma-separated MLflow experiment names the service searches; empty means every active one.
    experiments: str = ""
    # Upper bound on one MLflow call, so that an unreachable server is a quick 503, not a hang.
    mlflow_timeout_s: float = 5.0
    # Threads that run blocking MLflow client calls.
    mlflow_workers: int = 16

    @property
    def experiment_names(self) -> list[str]:
        return [name.strip() for name in self.experiments.split(",") if name.strip()]
