"""The training service as a real process (PostgreSQL, local Ray, the real MLflow server and the
experiments service), behind the real Envoy gateway, with S&P 500 demo uploads."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.gateway import start_gateway
from tests.helpers.net import free_port
from tests.helpers.rest import Client
from tests.helpers.services import ServiceProcess
from tests.helpers.training import bars_csv, features_csv, training_env, upload


@pytest.fixture(scope="session")
def training_process(postgres, mlflow_server, registry_process, tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    process = ServiceProcess(
        "mlmesh_training",
        free_port(),
        training_env(postgres, mlflow_server, registry_process, root),
        root / "training.log",
    )
    process.start(timeout_s=120)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def training_gateway(training_process, registry_process, tmp_path_factory):
    gateway = start_gateway(
        tmp_path_factory.mktemp("training-gw"),
        {"training": training_process.address, "experiments": registry_process.address},
    )
    yield gateway
    gateway.stop()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(training_gateway, tenant) -> Client:
    return Client(training_gateway.base_url, tenant)


@pytest.fixture
def spx(api) -> dict:
    """Bars and features of the S&P 500 uploaded by the test's tenant."""
    bars = upload(api, bars_csv(), kind="bars", symbol="SPX", name="spx-bars")
    features = upload(api, features_csv(), kind="features", symbol="SPX", name="spx-feat")
    assert bars.status_code == 201, bars.text
    assert features.status_code == 201, features.text
    return {"bars": bars.json(), "features": features.json()}
