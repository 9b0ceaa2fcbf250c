"""Configuration of the training service, from `MLMESH_TRAINING_*` and the mesh-wide variables."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from mlmesh_common.config import ServerSettings


class TrainingSettings(ServerSettings):
    model_config = SettingsConfigDict(env_prefix="MLMESH_TRAINING_", extra="ignore")

    port: int = 50053
    database_url: str = "sqlite+aiosqlite:///.mlmesh/training.db"
    database_pool_size: int = 10
    artifact_uri: str = Field(
        "file://.mlmesh/artifacts",
        validation_alias=AliasChoices("MLMESH_ARTIFACT_URI", "MLMESH_TRAINING_ARTIFACT_URI"),
    )
    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MLMESH_TRAINING_MLFLOW_TRACKING_URI"),
    )
    # The experiments service's gRPC address, where training records its Experiment rows.
    experiments_address: str = Field(
        "127.0.0.1:50052",
        validation_alias=AliasChoices(
            "MLMESH_EXPERIMENTS_UPSTREAM", "MLMESH_TRAINING_EXPERIMENTS_ADDRESS"
        ),
    )
    # A Ray cluster to run folds on, joined at start; unset: a local Ray with `ray_num_cpus`
    # CPUs, started (in a process of its own, local_ray.py) with the first job that needs Ray.
    ray_address: str | None = Field(
        None, validation_alias=AliasChoices("RAY_ADDRESS", "MLMESH_TRAINING_RAY_ADDRESS")
    )
    ray_num_cpus: int | None = None
    # How long shutdown waits for Ray's driver to disconnect (and a local Ray to stop).
    ray_shutdown_timeout_s: float = 3.0
    # Recorded as each training's `git_commit` lineage tag; detected from the checkout if unset.
    git_commit: str = Field("", validation_alias=AliasChoices("MLMESH_GIT_COMMIT"))
    # MLflow experiment that training runs are logged to.
    mlflow_experiment: str = "mlmesh-training"
    mlflow_timeout_s: float = 10.0
    # Optuna's study storage (a synchronous SQLAlchemy URL); unset: the training database.
    study_storage_url: str | None = None
    # How often a tuning driver renews its lease on a study; a study whose lease is three
    # intervals old is taken over (its RUNNING trials failed as interrupted) on resume.
    tune_heartbeat_s: float = 5.0
    # Task leases (tasks.py): a replica holds each task it runs for `task_lease_s`, renewing it
    # every `task_heartbeat_s`; every `task_scan_s` it takes over the tasks whose lease lapsed
    # (their replica died) or was handed over (SIGTERM). A task started `task_max_attempts`
    # times is FAILED instead of being started again.
    task_lease_s: float = 30.0
    task_heartbeat_s: float = 10.0
    task_scan_s: float = 5.0
    task_max_attempts: int = 3
    # This replica's name in the tasks it holds; unset: host name, process id and a random part.
    replica_id: str = ""
