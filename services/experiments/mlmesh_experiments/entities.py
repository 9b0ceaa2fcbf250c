"""Entities of the experiment registry and their proto conversion; storage-agnostic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.api import field_behavior_pb2
from google.protobuf import json_format

from mlmesh.experiments.v1 import experiment_pb2, run_pb2
from mlmesh_common.values import set_timestamp, struct, timestamp

ACTIVE, DELETED = "active", "deleted"
# Run statuses by name; an ended run has one of ENDED.
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
ENDED = ("FINISHED", "FAILED", "KILLED")


def _writable(descriptor) -> tuple[str, ...]:
    """The fields a client may write (create and update): those the proto does not mark
    `(google.api.field_behavior) = OUTPUT_ONLY`."""
    return tuple(
        f.name
        for f in descriptor.fields
        if field_behavior_pb2.OUTPUT_ONLY
        not in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


WRITABLE_FIELDS = _writable(experiment_pb2.Experiment.DESCRIPTOR)
# The writable maps and Structs; the other writable fields are strings.
EXPERIMENT_DICTS = tuple(
    f.name
    for f in experiment_pb2.Experiment.DESCRIPTOR.fields
    if f.name in WRITABLE_FIELDS and f.type == f.TYPE_MESSAGE
)
EXPERIMENT_SCALARS = tuple(name for name in WRITABLE_FIELDS if name not in EXPERIMENT_DICTS)


@dataclass
class Experiment:
    id: str
    tenant: str
    name: str
    created_at: int
    updated_at: int
    description: str = ""
    artifact_location: str = ""
    lifecycle_stage: str = ACTIVE
    strategy_id: str = ""
    dataset_version: str = ""
    feature_version: str = ""
    model_version: str = ""
    git_commit: str = ""
    mlflow_run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_proto(self) -> experiment_pb2.Experiment:
        return experiment_pb2.Experiment(
            id=self.id,
            name=self.name,
            description=self.description,
            artifact_location=self.artifact_location,
            tags=self.tags,
            lifecycle_stage=self.lifecycle_stage,
            strategy_id=self.strategy_id,
            dataset_version=self.dataset_version,
            feature_version=self.feature_version,
            model_version=self.model_version,
            git_commit=self.git_commit,
            mlflow_run_id=self.mlflow_run_id,
            parameters=struct(self.parameters),
            metrics=self.metrics,
            artifacts=self.artifacts,
            created_at=timestamp(self.created_at),
            updated_at=timestamp(self.updated_at),
        )


def experiment_fields(message: experiment_pb2.Experiment) -> dict[str, Any]:
    """The writable fields of a request's Experiment as plain Python values."""
    values: dict[str, Any] = {name: getattr(message, name) for name in EXPERIMENT_SCALARS}
    values["tags"] = dict(message.tags)
    values["metrics"] = dict(message.metrics)
    values["artifacts"] = dict(message.artifacts)
    values["parameters"] = json_format.MessageToDict(message.parameters)
    return values


@dataclass
class Run:
    id: str
    tenant: str
    experiment_id: str
    status: str
    start_time: int
    name: str = ""
    description: str = ""
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = ACTIVE
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def to_proto(self) -> run_pb2.Run:
        run = run_pb2.Run()
        self.fill(run)
        return run

    def fill(self, run: run_pb2.Run) -> None:
        """Sets the fields of an empty `run` (e.g. `response.runs.add()`, which a page fills in
        place instead of copying a Run per row): field by field, the enum from a dict and the
        timestamps from their parts, as the message constructor's map and well-known-type
        handling runs Python per entry (a 100-run page: 0.7 against 1.7 ms)."""
        run.id = self.id
        run.experiment_id = self.experiment_id
        run.name = self.name
        run.description = self.description
        run.status = _RUN_STATUS[self.status]
        set_timestamp(run.start_time, self.start_time)
        if self.end_time is not None:
            set_timestamp(run.end_time, self.end_time)
        tags, params, metrics = run.tags, run.params, run.metrics
        for key, value in self.tags.items():
            tags[key] = value
        for key, value in self.params.items():
            params[key] = value
        for key, value in self.metrics.items():
            metrics[key] = value
        run.artifact_uri = self.artifact_uri
        run.lifecycle_stage = self.lifecycle_stage


_RUN_STATUS = dict(run_pb2.Run.Status.items())


class HistoryPoint(NamedTuple):
    """One stored point of a metric's history: a plain tuple, cheap by the ten thousand."""

    step: int
    timestamp: int
    value: float


class MetricPoint(NamedTuple):
    """A point to log; a tuple, since batches bring them by the thousand."""

    key: str
    value: float
    step: int
    timestamp: int

    @property
    def is_nan(self) -> bool:
        return math.isnan(self.value)

    def to_proto(self) -> run_pb2.MetricPoint:
        return run_pb2.MetricPoint(step=self.step, value=self.value, timestamp=self.timestamp)


class MetricSeries(NamedTuple):
    """One metric's points as columns (log-batch's `series`): the values, and the steps and the
    timestamps, each either one per value or empty (every step 0, every timestamp now)."""

    key: str
    values: Sequence[float]
    steps: Sequence[int] = ()
    timestamps: Sequence[int] = ()
