"""The same tracking operations through three clients: MLflow's own REST client, the mlmesh
gRPC stub, and plain HTTP to the mlmesh gateway."""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol

import grpc
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from mlmesh.experiments.v1 import experiment_pb2, experiments_service_pb2_grpc
from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from mlmesh_common.history import by_metric


class Point(NamedTuple):
    key: str
    value: float
    step: int
    timestamp: int


class Tracker(Protocol):
    """What the workload needs from a tracking backend. `prepare_batch` builds a request's data
    outside the timed call; encoding it stays inside, as each client does it on every call."""

    def create_experiment(self, name: str) -> str: ...

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str: ...

    def prepare_batch(self, run_id: str, points: list[Point]) -> Any: ...

    def prepare_series(self, run_id: str, points: list[Point]) -> Any:
        """The batch in the most compact shape the API has, for `log_batch`: mlmesh's columns
        (one `series` per metric); MLflow's API, and so FastTrackML's, has one object per point
        only, so theirs is `prepare_batch`'s."""
        ...

    def log_batch(self, prepared: Any) -> None: ...

    def log_metric(self, run_id: str, point: Point) -> None: ...

    def log_details(
        self, run_id: str, points: list[Point], params: dict[str, str], tags: dict[str, str]
    ) -> None: ...

    def get_run(self, run_id: str) -> None: ...

    def search(self, experiment_id: str, query: str, limit: int, total: bool = False) -> int:
        """The runs of the first page; `total`: mlmesh also counts every match (the peers'
        searches have no total)."""
        ...

    def history(self, run_id: str, key: str) -> int: ...


class MlflowTracker:
    def __init__(self, tracking_uri: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def create_experiment(self, name: str) -> str:
        return self.client.create_experiment(name)

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        return self.client.create_run(experiment_id, tags=tags, run_name=name).info.run_id

    def prepare_batch(self, run_id: str, points: list[Point]) -> tuple[str, list[Metric]]:
        return run_id, [Metric(p.key, p.value, p.timestamp, p.step) for p in points]

    def prepare_series(self, run_id: str, points: list[Point]) -> tuple[str, list[Metric]]:
        return self.prepare_batch(run_id, points)

    def log_batch(self, prepared: tuple[str, list[Metric]]) -> None:
        run_id, metrics = prepared
        self.client.log_batch(run_id, metrics=metrics)

    def log_metric(self, run_id: str, point: Point) -> None:
        self.client.log_metric(
            run_id, point.key, point.value, timestamp=point.timestamp, step=point.step
        )

    def log_details(
        self, run_id: str, points: list[Point], params: dict[str, str], tags: dict[str, str]
    ) -> None:
        self.client.log_batch(
            run_id,
            metrics=self.prepare_batch(run_id, points)[1],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def get_run(self, run_id: str) -> None:
        self.client.get_run(run_id)

    def search(self, experiment_id: str, query: str, limit: int, total: bool = False) -> int:
        return len(self.client.search_runs([experiment_id], query, max_results=limit))

    def history(self, run_id: str, key: str) -> int:
        return len(self.client.get_metric_history(run_id, key))


class GrpcTracker:
    """The generated stub on one channel to the service itself, no gateway in between."""

    def __init__(self, address: str) -> None:
        # A connection of its own (channels to one target otherwise share one), so that the
        # concurrent writers spread over the service's worker processes.
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = experiments_service_pb2_grpc.ExperimentServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def create_experiment(self, name: str) -> str:
        experiment = experiment_pb2.Experiment(name=name)
        return self.stub.CreateExperiment(pb.CreateExperimentRequest(experiment=experiment)).id

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        request = pb.CreateRunRequest(experiment_id=experiment_id, name=name, tags=tags)
        return self.stub.CreateRun(request).id

    def prepare_batch(self, run_id: str, points: list[Point]) -> pb.LogBatchRequest:
        return pb.LogBatchRequest(run_id=run_id, metrics=[_metric_input(p) for p in points])

    def prepare_series(self, run_id: str, points: list[Point]) -> pb.LogBatchRequest:
        series = [
            pb.MetricSeries(key=key, values=values, steps=steps, timestamps=timestamps)
            for key, (values, steps, timestamps) in by_metric(points).items()
        ]
        return pb.LogBatchRequest(run_id=run_id, series=series)

    def log_batch(self, prepared: pb.LogBatchRequest) -> None:
        self.stub.LogBatch(prepared)

    def log_metric(self, run_id: str, point: Point) -> None:
        request = pb.LogMetricsRequest(
            run_id=run_id,
            metrics={point.key: point.value},
            step=point.step,
            timestamp=point.timestamp,
        )
        self.stub.LogMetrics(request)

    def log_details(
        self, run_id: str, points: list[Point], params: dict[str, str], tags: dict[str, str]
    ) -> None:
        request = self.prepare_batch(run_id, points)
        request.params.extend(pb.KeyValue(key=k, value=v) for k, v in params.items())
        request.tags.extend(pb.KeyValue(key=k, value=v) for k, v in tags.items())
        self.stub.LogBatch(request)

    def get_run(self, run_id: str) -> None:
        self.stub.GetRun(pb.GetRunRequest(run_id=run_id))

    def search(self, experiment_id: str, query: str, limit: int, total: bool = False) -> int:
        request = pb.ListRunsRequest(
            experiment_id=experiment_id, filter=query, limit=limit, include_total=total
        )
        return len(self.stub.ListRuns(request).runs)

    def count(self, experiment_id: str, query: str) -> int:
        request = pb.ListRunsRequest(experiment_id=experiment_id, filter=query, limit=1)
        return self.stub.ListRuns(request).total

    def history(self, run_id: str, key: str) -> int:
        request = pb.GetMetricHistoryRequest(run_id=run_id, key=key)
        return len(self.stub.GetMetricHistory(request).points)


class RestTracker:
    """JSON over one keep-alive `requests` session to the Envoy gateway."""

    def __init__(self, base_url: str) -> None:
        self.api = f"{base_url}/api/v1/experiments"
        self.http = requests.Session()
        # Loopback must never go through an http_proxy from the environment.
        self.http.trust_env = False

    def close(self) -> None:
        self.http.close()

    def create_experiment(self, name: str) -> str:
        return self._post(self.api, {"name": name})["id"]

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        body = {"experiment_id": experiment_id, "name": name, "tags": tags}
        return self._post(f"{self.api}/runs", body)["id"]

    def prepare_batch(self, run_id: str, points: list[Point]) -> tuple[str, dict[str, Any]]:
        body = {"metrics": [p._asdict() for p in points], "params": [], "tags": []}
        return f"{self.api}/runs/{run_id}/log-batch", body

    def prepare_series(self, run_id: str, points: list[Point]) -> tuple[str, dict[str, Any]]:
        series = [
            {"key": key, "values": values, "steps": steps, "timestamps": timestamps}
            for key, (values, steps, timestamps) in by_metric(points).items()
        ]
        return f"{self.api}/runs/{run_id}/log-batch", {"series": series}

    def log_batch(self, prepared: tuple[str, dict[str, Any]]) -> None:
        self._post(*prepared)

    def log_metric(self, run_id: str, point: Point) -> None:
        body = {
            "metrics": {point.key: point.value},
            "step": point.step,
            "timestamp": point.timestamp,
        }
        self._post(f"{self.api}/runs/{run_id}/log-metrics", body)

    def log_details(
        self, run_id: str, points: list[Point], params: dict[str, str], tags: dict[str, str]
    ) -> None:
        url, body = self.prepare_batch(run_id, points)
        body["params"] = [{"key": k, "value": v} for k, v in params.items()]
        body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        self._post(url, body)

    def get_run(self, run_id: str) -> None:
        self._get(f"{self.api}/runs/{run_id}")

    def search(self, experiment_id: str, query: str, limit: int, total: bool = False) -> int:
        params = {
            "experiment_id": experiment_id,
            "filter": query,
            "limit": limit,
            "include_total": "true" if total else "false",
        }
        return len(self._get(f"{self.api}/runs", params)["runs"])

    def history(self, run_id: str, key: str) -> int:
        return len(self._get(f"{self.api}/runs/{run_id}/metrics/{key}/history")["points"])

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(url, json=body)
        response.raise_for_status()
        return response.json()

    def _get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.get(url, params=params)
        response.raise_for_status()
        return response.json()


def _metric_input(point: Point) -> pb.MetricInput:
    return pb.MetricInput(
        key=point.key, value=point.value, step=point.step, timestamp=point.timestamp
    )


class FastTrackTracker:
    """MLflow's REST API on FastTrackML, as plain JSON over one keep-alive `requests` session
    (the same client work as `RestTracker`; MLflow's own client would add its entity layer)."""

    def __init__(self, base_url: str) -> None:
        self.api = f"{base_url}/api/2.0/mlflow"
        self.http = requests.Session()
        self.http.trust_env = False

    def close(self) -> None:
        self.http.close()

    def create_experiment(self, name: str) -> str:
        return self._post("experiments/create", {"name": name})["experiment_id"]

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        body = {
            "experiment_id": experiment_id,
            "run_name": name,
            "start_time": _now_ms(),
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        return self._post("runs/create", body)["run"]["info"]["run_id"]

    def prepare_batch(self, run_id: str, points: list[Point]) -> dict[str, Any]:
        return {"run_id": run_id, "metrics": [p._asdict() for p in points]}

    def prepare_series(self, run_id: str, points: list[Point]) -> dict[str, Any]:
        return self.prepare_batch(run_id, points)

    def log_batch(self, prepared: dict[str, Any]) -> None:
        self._post("runs/log-batch", prepared)

    def log_metric(self, run_id: str, point: Point) -> None:
        self._post("runs/log-metric", {"run_id": run_id, **point._asdict()})

    def log_details(
        self, run_id: str, points: list[Point], params: dict[str, str], tags: dict[str, str]
    ) -> None:
        body = self.prepare_batch(run_id, points)
        body["params"] = [{"key": k, "value": v} for k, v in params.items()]
        body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        self._post("runs/log-batch", body)

    def get_run(self, run_id: str) -> None:
        self._get("runs/get", {"run_id": run_id})

    def search(self, experiment_id: str, query: str, limit: int, total: bool = False) -> int:
        body = {"experiment_ids": [experiment_id], "filter": query, "max_results": limit}
        return len(self._post("runs/search", body).get("runs", []))

    def count(self, experiment_id: str, query: str) -> int:
        """Every match, page by page (MLflow's API has no total)."""
        found, token = 0, None
        while True:
            body = {"experiment_ids": [experiment_id], "filter": query, "max_results": 1000}
            if token:
                body["page_token"] = token
            answer = self._post("runs/search", body)
            found += len(answer.get("runs", []))
            token = answer.get("next_page_token")
            if not token:
                return found

    def history(self, run_id: str, key: str) -> int:
        answer = self._get("metrics/get-history", {"run_id": run_id, "metric_key": key})
        return len(answer.get("metrics", []))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(f"{self.api}/{path}", json=body)
        response.raise_for_status()
        return response.json()

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self.http.get(f"{self.api}/{path}", params=params)
        response.raise_for_status()
        return response.json()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
