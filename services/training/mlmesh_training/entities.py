"""Entities of the training service and their proto conversion; storage-agnostic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.rpc import status_pb2

from mlmesh.training.v1 import dataset_pb2, model_pb2, task_pb2
from mlmesh_common.values import struct, timestamp

TASK_STATUSES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
TASK_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class Model:
    id: str
    tenant: str
    name: str
    model_type: str
    family: str
    plugin_key: str
    parameters: dict[str, Any]
    version: int
    created_at: int
    updated_at: int
    mlflow_run_id: str = ""
    artifact_uri: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def to_proto(self) -> model_pb2.Model:
        return model_pb2.Model(
            id=self.id,
            name=self.name,
            model_type=self.model_type,
            family=self.family,
            plugin_key=self.plugin_key,
            parameters=struct(self.parameters),
            version=self.version,
            mlflow_run_id=self.mlflow_run_id,
            artifact_uri=self.artifact_uri,
            metrics=self.metrics,
            created_at=timestamp(self.created_at),
            updated_at=timestamp(self.updated_at),
        )


@dataclass
class Dataset:
    id: str
    tenant: str
    name: str
    kind: str
    symbol: str
    timeframe: str
    columns: list[str]
    row_count: int
    start_date: int
    end_date: int
    version_hash: str
    storage_uri: str
    created_at: int

    def to_proto(self) -> dataset_pb2.Dataset:
        return dataset_pb2.Dataset(
            id=self.id,
            name=self.name,
            kind=self.kind,
            symbol=self.symbol,
            timeframe=self.timeframe,
            columns=self.columns,
            row_count=self.row_count,
            start_date=timestamp(self.start_date),
            end_date=timestamp(self.end_date),
            version_hash=self.version_hash,
            storage_uri=self.storage_uri,
            created_at=timestamp(self.created_at),
        )


@dataclass
class Task:
    id: str
    tenant: str
    kind: str
    status: str
    request: dict[str, Any]
    created_at: int
    progress_completed: int = 0
    progress_total: int = 0
    progress_message: str = ""
    result: dict[str, Any] | None = None
    # google.rpc.Status as JSON: {"code", "message", "details"}.
    error: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None
    # The replica running it, until when (epoch ms) it holds the task unless it renews, and
    # how many times a replica has started it (tasks.py: a lapsed lease is taken over).
    owner: str = ""
    lease_expires_at: int = 0
    attempt: int = 0

    def to_proto(self) -> task_pb2.Task:
        task = task_pb2.Task(
            task_id=self.id,
            kind=self.kind,
            status=task_pb2.Task.Status.Value(self.status),
            progress=task_pb2.TaskProgress(
                completed=self.progress_completed,
                total=self.progress_total,
                message=self.progress_message,
            ),
            created_at=timestamp(self.created_at),
            attempt=self.attempt,
        )
        if self.result is not None:
            task.result.CopyFrom(struct(self.result))
        if self.error is not None:
            task.error.CopyFrom(json_format.ParseDict(self.error, status_pb2.Status()))
        if self.started_at is not None:
            task.started_at.CopyFrom(timestamp(self.started_at))
        if self.finished_at is not None:
            task.finished_at.CopyFrom(timestamp(self.finished_at))
        return task
