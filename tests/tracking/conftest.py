"""Fixtures for tracking integration tests: seeded MLflow runs, the tracking service as a real
process, and the real Envoy gateway in front of it."""

from __future__ import annotations

import grpc
import pytest
import requests

from mlmesh.tracking.v1 import tracking_service_pb2_grpc
from tests.helpers.gateway import Gateway, start_gateway
from tests.helpers.net import free_port
from tests.helpers.services import ServiceProcess
from tests.tracking.data import Seed, log_seed_runs


@pytest.fixture(scope="session")
def seed(mlflow_server) -> Seed:
    return log_seed_runs(mlflow_server.url)


@pytest.fixture(scope="session")
def tracking_service(mlflow_server, seed, tmp_path_factory):
    names = f"{seed.prefix}-main,{seed.prefix}-other"
    service = ServiceProcess(
        "mlmesh_tracking",
        free_port(),
        {
            "MLFLOW_TRACKING_URI": mlflow_server.url,
            "MLMESH_TRACKING_EXPERIMENTS": names,
        },
        tmp_path_factory.mktemp("tracking") / "tracking.log",
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def gateway(tracking_service, tmp_path_factory) -> Gateway:
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway"), upstreams={"tracking": tracking_service.address}
    )
    yield gw
    gw.stop()


class Rest:
    """requests.Session bound to the gateway's base URL (keep-alive, like a real frontend)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def get(self, path: str, tenant: str | None = None, **kwargs) -> requests.Response:
        return self.request("GET", path, tenant, **kwargs)

    def post(self, path: str, tenant: str | None = None, **kwargs) -> requests.Response:
        return self.request("POST", path, tenant, **kwargs)

    def request(self, method, path, tenant=None, **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if tenant:
            headers["x-tenant-id"] = tenant
        return self.session.request(
            method, self.base_url + path, headers=headers, timeout=30, **kwargs
        )


@pytest.fixture(scope="session")
def rest(gateway) -> Rest:
    return Rest(gateway.base_url)


@pytest.fixture(scope="session")
def stub(tracking_service):
    with grpc.insecure_channel(tracking_service.address) as channel:
        yield tracking_service_pb2_grpc.TrackingServiceStub(channel)


@pytest.fixture(scope="session")
def gateway_stub(gateway):
    with grpc.insecure_channel(gateway.grpc_address) as channel:
        yield tracking_service_pb2_grpc.TrackingServiceStub(channel)
