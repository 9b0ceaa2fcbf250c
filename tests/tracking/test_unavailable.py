"""MLflow down: the tracking service answers UNAVAILABLE (503 through the gateway) quickly."""

from __future__ import annotations

import grpc
import pytest
import requests

from mlmesh.tracking.v1 import tracking_service_pb2 as pb
from mlmesh.tracking.v1 import tracking_service_pb2_grpc
from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.services import ServiceProcess


@pytest.fixture(scope="module")
def orphan_service(tmp_path_factory):
    """A tracking service whose MLflow server is a port nobody listens on."""
    service = ServiceProcess(
        "mlmesh_tracking",
        free_port(),
        {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
            "MLMESH_TRACKING_MLFLOW_TIMEOUT_S": "2",
        },
        tmp_path_factory.mktemp("orphan") / "tracking.log",
    )
    service.start()
    yield service
    service.stop()


def test_grpc_unavailable(orphan_service):
    with grpc.insecure_channel(orphan_service.address) as channel:
        stub = tracking_service_pb2_grpc.TrackingServiceStub(channel)
        for call in (
            lambda: stub.GetRun(pb.GetRunRequest(run_id="0" * 32), timeout=20),
            lambda: stub.ListRuns(pb.ListRunsRequest(), timeout=20),
            lambda: stub.ListExperiments(pb.ListExperimentsRequest(), timeout=20),
        ):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_rest_503_with_reason(orphan_service, tmp_path):
    gateway = start_gateway(tmp_path, upstreams={"tracking": orphan_service.address})
    try:
        response = requests.get(f"{gateway.base_url}/api/v1/tracking/runs", timeout=20)
        assert response.status_code == 503
        reasons = [d.get("reason") for d in response.json()["details"]]
        assert "MLFLOW_UNAVAILABLE" in reasons
    finally:
        gateway.stop()


def test_service_drains_and_exits_cleanly_on_sigterm(tmp_path):
    service = ServiceProcess(
        "mlmesh_tracking",
        free_port(),
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
        tmp_path / "tracking.log",
    ).start()
    assert service.stop() == 0
    assert '"event": "stopped"' in service.log_tail()
