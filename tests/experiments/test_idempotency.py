"""Idempotency keys through the real gateway to the service on PostgreSQL: a retry with the same
`x-idempotency-key` gets the first answer and writes nothing new; the header reaches the service
through the transcoder, and native gRPC callers send it as metadata."""

from __future__ import annotations

import inspect
import uuid

import grpc
import pytest
import requests

from mlmesh.api.v1 import http_pb2
from mlmesh.experiments.v1 import experiments_service_pb2 as pb
from mlmesh.experiments.v1 import experiments_service_pb2_grpc
from mlmesh_common.idempotency import IDEMPOTENCY_HEADER
from mlmesh_experiments.transport import ExperimentServicer
from tests.helpers.rest import Client

API = "/api/v1/experiments"


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(registry_gateway, tenant) -> Client:
    return Client(registry_gateway.base_url, tenant)


def _key() -> dict[str, str]:
    return {IDEMPOTENCY_HEADER: uuid.uuid4().hex}


def _reason(response) -> str:
    (info,) = [d for d in response.json()["details"] if d["@type"].endswith("ErrorInfo")]
    return info["reason"]


def test_create_run_retried_with_its_key_creates_one_run(api):
    experiment = api("POST", API, json={"strategy_id": "S1"}).json()
    key = _key()
    body = {"experiment_id": experiment["id"], "name": "retried"}
    first = api("POST", f"{API}/runs", json=body, headers=key)
    again = api("POST", f"{API}/runs", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    listed = api("GET", f"{API}/runs", params={"experiment_id": experiment["id"]}).json()
    assert listed["total"] == 1
    # Without a key, the same body is a new run.
    assert api("POST", f"{API}/runs", json=body).status_code == 201
    listed = api("GET", f"{API}/runs", params={"experiment_id": experiment["id"]}).json()
    assert listed["total"] == 2


def test_log_batch_retried_with_its_key_writes_its_points_once(api):
    experiment = api("POST", API, json={}).json()
    run = api("POST", f"{API}/runs", json={"experiment_id": experiment["id"]}).json()
    batch = {"metrics": [{"key": "loss", "value": 1.0 / (s + 1), "step": s} for s in range(5)]}
    key = _key()
    answers = [
        api("POST", f"{API}/runs/{run['id']}/log-batch", json=batch, headers=key) for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json()["metrics_logged"] == 5
    history = api("GET", f"{API}/runs/{run['id']}/metrics/loss/history").json()
    assert [int(p["step"]) for p in history["points"]] == [0, 1, 2, 3, 4]


def test_a_key_reused_for_another_request_is_refused_and_writes_nothing(api):
    experiment = api("POST", API, json={}).json()
    run = api("POST", f"{API}/runs", json={"experiment_id": experiment["id"]}).json()
    key = _key()
    path = f"{API}/runs/{run['id']}/log-metrics"
    assert api("POST", path, json={"metrics": {"a": 1}, "step": 0}, headers=key).ok
    other = api("POST", path, json={"metrics": {"a": 2}, "step": 1}, headers=key)
    assert other.status_code == 400
    assert _reason(other) == "IDEMPOTENCY_KEY_REUSED"
    history = api("GET", f"{API}/runs/{run['id']}/metrics/a/history").json()
    assert [p["value"] for p in history["points"]] == [1]


def test_keys_are_per_tenant(registry_gateway):
    alice = Client(registry_gateway.base_url, f"t-{uuid.uuid4().hex[:10]}")
    bob = Client(registry_gateway.base_url, f"t-{uuid.uuid4().hex[:10]}")
    key = _key()
    first = alice("POST", API, json={"name": "same-name"}, headers=key)
    second = bob("POST", API, json={"name": "same-name"}, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


def test_a_failed_write_keeps_its_key_free(api):
    experiment = api("POST", API, json={}).json()
    run = api("POST", f"{API}/runs", json={"experiment_id": experiment["id"]}).json()
    path = f"{API}/runs/{run['id']}/log-params"
    assert api("POST", path, json={"params": {"lr": "0.1"}}).ok
    key = _key()
    refused = api("POST", path, json={"params": {"lr": "0.2"}}, headers=key)
    assert refused.status_code == 400
    assert _reason(refused) == "PARAM_ALREADY_LOGGED"
    # The same request again is evaluated again (and refused again), not replayed as a success.
    assert api("POST", path, json={"params": {"lr": "0.2"}}, headers=key).status_code == 400


def test_malformed_key_is_a_400(api):
    response = api("POST", API, json={}, headers={IDEMPOTENCY_HEADER: "has spaces"})
    assert response.status_code == 400
    assert _reason(response) == "INVALID_IDEMPOTENCY_KEY"


def test_grpc_metadata_key_and_end_run_replay(registry_process, tenant):
    with grpc.insecure_channel(registry_process.address) as channel:
        stub = experiments_service_pb2_grpc.ExperimentServiceStub(channel)
        meta = (("x-tenant-id", tenant),)
        experiment = stub.CreateExperiment(pb.CreateExperimentRequest(), metadata=meta)
        run = stub.CreateRun(pb.CreateRunRequest(experiment_id=experiment.id), metadata=meta)
        keyed = (*meta, (IDEMPOTENCY_HEADER, uuid.uuid4().hex))
        ended = stub.EndRun(pb.EndRunRequest(run_id=run.id), metadata=keyed)
        # Ending an ended run is a 400, but the retry of the same call gets the first answer.
        assert stub.EndRun(pb.EndRunRequest(run_id=run.id), metadata=keyed) == ended
        with pytest.raises(grpc.RpcError) as error:
            stub.EndRun(pb.EndRunRequest(run_id=run.id), metadata=meta)
        assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_writes_that_take_a_key_are_the_ones_the_protos_declare(registry_gateway):
    """`(mlmesh.api.v1.idempotency_key)` documents the header in OpenAPI; the servicer methods
    that replay an answer by key (`_once`) must be exactly those RPCs."""
    service = pb.DESCRIPTOR.services_by_name["ExperimentService"]
    declared = {
        m.name for m in service.methods if m.GetOptions().Extensions[http_pb2.idempotency_key]
    }
    replaying = {
        m.name
        for m in service.methods
        if "self._once(" in inspect.getsource(getattr(ExperimentServicer, m.name))
    }
    assert declared == replaying and "LogBatch" in declared
    document = requests.get(f"{registry_gateway.base_url}/api/v1/openapi.json", timeout=10).json()
    keyed = {
        operation["operationId"].removeprefix("ExperimentService_")
        for path in document["paths"].values()
        for operation in path.values()
        if {"$ref": "#/components/parameters/IdempotencyKey"} in operation.get("parameters", [])
    }
    assert keyed == declared
