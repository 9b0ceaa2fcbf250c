"""Tracking entities (runs, metric points, experiments) and their conversion to protos."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlmesh.tracking.v1 import experiment_pb2, run_pb2
from mlmesh_common.values import nullable

TENANT_TAG = "mlmesh.tenant"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        """Runs logged by plain MLflow clients carry no tenant tag: they belong to `default`."""
        return self.tags.get(TENANT_TAG) or "default"

    @property
    def run_type(self) -> str:
        return self.tags.get("run_type", "")

    def _status_proto(self) -> int:
        return run_pb2.Run.Status.Value(self.status) if self.status in _STATUSES else 0

    def to_proto(self) -> run_pb2.Run:
        return run_pb2.Run(
            run_id=self.run_id,
            run_name=self.run_name,
            status=self._status_proto(),
            start_time=self.start_time,
            end_time=nullable(None if self.end_time is None else str(self.end_time)),
            artifact_uri=self.artifact_uri,
            params=self.params,
            metrics=self.metrics,
            tags=self.tags,
            experiment_id=self.experiment_id,
        )

    def to_summary_proto(self) -> run_pb2.RunSummary:
        return run_pb2.RunSummary(
            run_id=self.run_id,
            run_name=self.run_name,
            status=self._status_proto(),
            start_time=self.start_time,
            params=self.params,
            metrics=self.metrics,
            tags=self.tags,
            experiment_id=self.experiment_id,
        )


_STATUSES = set(run_pb2.Run.Status.keys()) - {"STATUS_UNSPECIFIED"}


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float
    timestamp: int

    def to_proto(self) -> run_pb2.MetricPoint:
        return run_pb2.MetricPoint(step=self.step, value=self.value, timestamp=self.timestamp)


@dataclass(frozen=True)
class ExperimentRecord:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    tags: dict[str, str]
    creation_time: int
    last_update_time: int

    def to_proto(self) -> experiment_pb2.Experiment:
        return experiment_pb2.Experiment(
            experiment_id=self.experiment_id,
            name=self.name,
            artifact_location=self.artifact_location,
            lifecycle_stage=self.lifecycle_stage,
            tags=self.tags,
            creation_time=self.creation_time,
            last_update_time=self.last_update_time,
        )
